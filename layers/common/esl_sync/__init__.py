"""esl-sync: keeps Hipoink shelf labels in step with Clover catalogs.

All logic lives in this package (shipped as the shared Lambda layer); the handlers in
``functions/`` only parse events and call it.
"""
