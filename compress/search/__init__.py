"""Student architecture search under a measured latency budget: spaces (students/spaces.py) -> measured latency table
and predictor (latency.py) -> short-distillation accuracy proxy with successive halving (proxy.py) -> the search
itself and its outputs (runner.py, report.py)."""
