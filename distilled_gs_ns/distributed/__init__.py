"""torch.distributed plumbing for block-wise training (Momentum-GS): nothing here starts processes;
nerfstudio's launcher does (`--machine.num-devices`)."""
