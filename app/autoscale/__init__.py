"""Predictive autoscaling: forecast each region's request rate, publish replicas ahead of load.

`forecast` (seasonal Holt-Winters, fitted by statsmodels, updated online) → `scaler`
(desired replicas over the pod start-up lead) → `service` (exports
`signal_desired_replicas{region}` for the HPA's external metric). `hpa` replays the
Kubernetes HPA algorithm and a Deployment's start-up delay for the simulations;
`spot` is the spot-first GPU capacity model with preemption waves.
"""
