"""bench/moe_profile: the slot-combine alternative computes fused's layer; the tool runs."""
import torch

from bench.moe_profile import SlotCombineMoE, main
from s3core.config import MoEConfig
from s3core.moe import MoEFFN


def test_slot_combine_equals_fused_forward_and_gradients():
    x = torch.randn(3, 10, 16, generator=torch.Generator().manual_seed(0))
    grads = []
    for cls in (MoEFFN, SlotCombineMoE):
        torch.manual_seed(1)
        layer = cls(MoEConfig(d_model=16, d_ff=32, chi=4, rho=2, top_k=4, dispatch="fused"))
        xi = x.clone().requires_grad_(True)
        out = layer(xi).output
        (out * torch.linspace(-1, 1, 16)).sum().backward()
        grads.append((out.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (o1, dx1, g1), (o2, dx2, g2) = grads
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(dx2, dx1)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], msg=name)


def test_the_profile_tool_runs(capsys):
    assert main(["--tokens", "500", "--chi", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "fused:" in out and "slot-combine:" in out and "self CPU ms per forward + backward step" in out
