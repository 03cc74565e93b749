"""rhythm.processors"""
