"""The experiment steps (pretrain, rank, cycle, main) as library functions.

Each step does its work and logs through `alod.tracking`; the click commands in
`entrypoints/` only parse options and call these.
"""
