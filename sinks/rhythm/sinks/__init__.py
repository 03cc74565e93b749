"""rhythm.sinks"""
