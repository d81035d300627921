"""Ground floor: stage model, telemetry set-up, propagation carriers, metrics, trace store."""
