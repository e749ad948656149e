"""lfmm"""
