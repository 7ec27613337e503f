"""agilenn.benchmarks"""
