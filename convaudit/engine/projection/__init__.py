"""Projection of a kernel onto the operator-norm ball {‖conv‖₂ <= c} (MATH.md §3).

``torus`` embeds a kernel on a grid and back; ``kernel`` clips / alternates / rescales one kernel;
``layer`` applies that to an IR layer with its geometry; ``any_size`` handles layers whose input
size is unknown.
"""
