"""PruningCallback on your own LightningModule, without Hydra or prunelab's models.

    python examples/own_module.py
"""

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from prunelab.pruning import PruningCallback, build_plan


class MyModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)

    # 10% -> 50% in 5% steps at the ends of epochs 0..8, then one fine-tuning epoch
    plan = build_plan("iterative", amount=0.5, initial=0.1, step_size=0.05)
    pruning = PruningCallback(plan, method="l1_unstructured")  # Conv2d+Linear, last layer dense
    trainer = L.Trainer(max_epochs=10, callbacks=[pruning], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    model = MyModel()
    trainer.fit(model, loader)

    for step in pruning.history:
        print(f"epoch {step['epoch']}: target {step['target']:.2f} reached {step['achieved']:.4f}")
    conv = model.features[0].weight  # a plain Parameter again: masks were made permanent
    print(f"conv zeros: {(conv == 0).float().mean():.4f}")


if __name__ == "__main__":
    main()
