"""The keeper: the detached process per profile that holds a tunnel (process.py), its control
channel and launch, the start-up `up` waits on, the supervisor and the tunnel it keeps, the state
records and the advice for a manual stop. Imports launchers/, jupyter/, ssh/ and the top-level
base modules, never commands/ or cli."""
