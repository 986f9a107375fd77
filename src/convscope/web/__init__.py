"""The web UI (`convscope serve`): a thin Gradio client of the engines.

Importing this package needs nothing beyond convscope itself; Gradio (the `web` extra) is imported
only when the app is built (`convscope.web.app.build_app`).
"""
