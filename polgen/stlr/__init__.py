"""stlr"""
