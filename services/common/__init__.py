"""Contracts and helpers shared by every Wenzheng service."""
