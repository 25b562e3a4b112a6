"""recursionlab.nn"""
