"""The environment fingerprint the bench and report.json share."""

from edgekd.bench.environment import environment


def test_environment_describes_cpu_versions_and_is_cached():
    env = environment()
    assert env is environment()  # computed once per process
    cpu = env["cpu"]
    assert cpu["model"] and cpu["logical_cores"] >= 1 and isinstance(cpu["isa"], list)
    assert {"onnxruntime", "onnx", "numpy"} <= set(env["versions"])
    assert {"cuda", "gpu", "os", "python", "memory_gb"} <= set(env)
