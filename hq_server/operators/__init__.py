"""Operators: the people who run HQ, their accounts and how they sign in."""
