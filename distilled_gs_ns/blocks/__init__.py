"""Block-wise training of large scenes (Momentum-GS): ground-plane partition, camera assignment, weighting."""
