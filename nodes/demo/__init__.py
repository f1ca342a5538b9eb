"""The built-in demo model's data: a procedural scene dataset and a rule-based adherence evaluator.

The demo model (issue 9) is trained on scenes drawn by ``nodes.demo.dataset`` and judged by
``nodes.demo.evaluate``; both ship with the package so the benchmark and the CI adherence test need
nothing downloaded. Neither imports torch, so they stay cheap to import.
"""
