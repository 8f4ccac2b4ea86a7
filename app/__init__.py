"""Infinity Canvas desktop application: the PySide6 + qasync GUI and the console entry point.

May import `engine`; starts `training` only as a subprocess. Nothing else imports `app`.
"""
