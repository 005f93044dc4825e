"""Writes the state-dict keys, shapes and dtypes of torchvision's ResNet-18...152, in order, for
Tests/ResidualZooTests (the zoo's names must match these so that torchvision weights load).

    /work/main/scripts/.venv/bin/python scripts/torchvision_state_dicts.py > Tests/ResidualZooTests/Fixtures/torchvision_state_dicts.txt
"""
import torch
import torchvision

print(f"# torch {torch.__version__}, torchvision {torchvision.__version__}: model name shape dtype")
for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]:
    model = getattr(torchvision.models, name)(weights=None)
    for key, t in model.state_dict().items():
        shape = ",".join(str(d) for d in t.shape)
        print(name, key, f"[{shape}]", str(t.dtype).removeprefix("torch."))
