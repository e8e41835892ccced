"""Procedurally generated paintings in six distinct styles, built without any download."""
