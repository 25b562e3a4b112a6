"""recursionlab.models"""
