"""Plans where steering runs: a SteeringPlan written as a llama.cpp control vector, an lm-evaluation-harness
`steered` file, an EasySteer/vLLM steering spec or Neuronpedia steering features (formats.py maps the names to the
writers), and vectors from elsewhere read back into a plan (importers.py)."""
