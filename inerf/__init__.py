"""inerf"""
