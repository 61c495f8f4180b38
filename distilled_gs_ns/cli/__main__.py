from distilled_gs_ns.cli.main import entrypoint

entrypoint()
