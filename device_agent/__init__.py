"""agilenn.device_agent"""
