"""ComfyUI's sampling family: k-diffusion samplers over ComfyUI's sigma schedules.

Beside diffusers' schedulers (``nodes.schedulers``), this family reproduces what ComfyUI's
``KSampler`` computes, so an imported ComfyUI workflow makes ComfyUI's pixels: the model's
discrete sigma table (``sigmas``), ComfyUI's schedules over it (``schedules``), the samplers as
resumable step programs (``solvers``), their noise (``noise``), and an adapter that lets the one
``Denoise`` loop drive them like any diffusers scheduler (``scheduler``).
"""
