"""recursionlab.data"""
