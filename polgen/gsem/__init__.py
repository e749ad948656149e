"""gsem"""
