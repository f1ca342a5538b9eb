"""ComfyUI compatibility for the diffusion pack: its workflows translated into nodeflow workflows.

Translation only: the importer turns a ComfyUI prompt (API format) or editor graph (UI format,
also found in ComfyUI's PNGs) into a plain nodeflow ``Workflow`` that the engine validates and
runs like any other. Nothing here executes a ComfyUI node.
"""
