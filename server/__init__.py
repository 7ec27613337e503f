"""agilenn.server"""
