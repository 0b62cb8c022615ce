"""lossforge"""
