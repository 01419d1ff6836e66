"""Ray-side classes: thin deployments that hold state and call the engine."""
