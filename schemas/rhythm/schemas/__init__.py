"""rhythm.schemas"""
