"""Worker autoscaling: policies, the fleet-wide decision loop, decisions and the simulator."""
