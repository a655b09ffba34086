"""PyTorch transcription of the AASIST back end as W2V_AASIST_SPEC.md section 1.4-1.5 describes it
(the baseline of the model CPU benchmark). State-dict keys are the reference's, so the parity
fixtures load into it (`python aasist_spec.py --check FIXTURE_DIR`).

Semantics kept from the spec: softmax over dim -2 in the graph attention maps, top-k node order,
BatchNorm1d over batch x nodes, abs inside the readout max, the raw master parameters broadcast
in the first HS-GAL, one logit. The dead `bn1` of the residual blocks is outside the forward path
(as in the Rust port); in training mode its running statistics are still updated.
"""

import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def _attention_vector(out_dim):
    w = nn.Parameter(torch.empty(out_dim, 1))
    nn.init.xavier_normal_(w)
    return w


def _pairwise(x):
    n = x.size(1)
    a = x.unsqueeze(2).expand(-1, -1, n, -1)
    return a * a.transpose(1, 2)


def _bn_nodes(bn, y):
    shape = y.shape
    return bn(y.reshape(-1, shape[-1])).view(shape)


class Block(nn.Module):
    """Residual block: conv1 (2x3, pad 1,1) -> bn2 -> SELU -> conv2 (2x3, pad 0,1) + skip."""

    def __init__(self, cin, cout, first):
        super().__init__()
        if not first:
            self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, (2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, (2, 3), padding=(0, 1))
        if cin != cout:
            self.conv_downsample = nn.Conv2d(cin, cout, (1, 3), padding=(0, 1))
        self.first = first
        self.down = cin != cout

    def forward(self, x):
        if self.training and not self.first:
            with torch.no_grad():
                self.bn1(x)
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        return out + (self.conv_downsample(x) if self.down else x)


class GAT(nn.Module):
    def __init__(self, din, dout, temp):
        super().__init__()
        self.att_proj = nn.Linear(din, dout)
        self.att_weight = _attention_vector(dout)
        self.proj_with_att = nn.Linear(din, dout)
        self.proj_without_att = nn.Linear(din, dout)
        self.bn = nn.BatchNorm1d(dout)
        self.temp = temp

    def forward(self, x):
        x = F.dropout(x, 0.2, self.training)
        att = torch.tanh(self.att_proj(_pairwise(x))) @ self.att_weight
        att = F.softmax(att / self.temp, dim=-2)
        y = self.proj_with_att(att.squeeze(-1) @ x) + self.proj_without_att(x)
        return F.selu(_bn_nodes(self.bn, y))


class HSGAL(nn.Module):
    def __init__(self, din, dout, temp):
        super().__init__()
        self.proj_type1 = nn.Linear(din, din)
        self.proj_type2 = nn.Linear(din, din)
        self.att_proj = nn.Linear(din, dout)
        self.att_projM = nn.Linear(din, dout)
        self.att_weight11 = _attention_vector(dout)
        self.att_weight22 = _attention_vector(dout)
        self.att_weight12 = _attention_vector(dout)
        self.att_weightM = _attention_vector(dout)
        self.proj_with_att = nn.Linear(din, dout)
        self.proj_without_att = nn.Linear(din, dout)
        self.proj_with_attM = nn.Linear(din, dout)
        self.proj_without_attM = nn.Linear(din, dout)
        self.bn = nn.BatchNorm1d(dout)
        self.temp = temp

    def forward(self, x1, x2, master):
        n1, n2 = x1.size(1), x2.size(1)
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        x = F.dropout(x, 0.2, self.training)
        q = torch.tanh(self.att_proj(_pairwise(x)))
        top = torch.cat([q[:, :n1, :n1] @ self.att_weight11, q[:, :n1, n1:] @ self.att_weight12], dim=2)
        bottom = torch.cat([q[:, n1:, :n1] @ self.att_weight12, q[:, n1:, n1:] @ self.att_weight22], dim=2)
        att = F.softmax(torch.cat([top, bottom], dim=1) / self.temp, dim=-2)
        am = torch.tanh(self.att_projM(x * master)) @ self.att_weightM
        am = F.softmax(am / self.temp, dim=-2)
        master = self.proj_with_attM(am.squeeze(-1).unsqueeze(1) @ x) + self.proj_without_attM(master)
        y = self.proj_with_att(att.squeeze(-1) @ x) + self.proj_without_att(x)
        y = F.selu(_bn_nodes(self.bn, y))
        return y[:, :n1], y[:, n1:], master


class Pool(nn.Module):
    def __init__(self, din, ratio=0.5):
        super().__init__()
        self.proj = nn.Linear(din, 1)
        self.ratio = ratio

    def forward(self, h):
        scores = torch.sigmoid(self.proj(F.dropout(h, 0.3, self.training)))
        k = max(int(h.size(1) * self.ratio), 1)
        _, idx = torch.topk(scores, k, dim=1)
        return torch.gather(h * scores, 1, idx.expand(-1, -1, h.size(2)))


class AasistSpec(nn.Module):
    def __init__(self, ssl_dim):
        super().__init__()
        self.LL = nn.Linear(ssl_dim, 128)
        self.first_bn = nn.BatchNorm2d(1)
        self.first_bn1 = nn.BatchNorm2d(64)
        blocks = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64)]
        self.encoder = nn.ModuleList(nn.Sequential(Block(a, b, i == 0)) for i, (a, b) in enumerate(blocks))
        self.attention = nn.Sequential(nn.Conv2d(64, 128, 1), nn.SELU(), nn.BatchNorm2d(128), nn.Conv2d(128, 64, 1))
        self.pos_S = nn.Parameter(torch.randn(1, 42, 64))
        self.master1 = nn.Parameter(torch.randn(1, 1, 64))
        self.master2 = nn.Parameter(torch.randn(1, 1, 64))
        self.GAT_layer_S = GAT(64, 64, 2.0)
        self.GAT_layer_T = GAT(64, 64, 2.0)
        self.HtrgGAT_layer_ST11 = HSGAL(64, 32, 100.0)
        self.HtrgGAT_layer_ST12 = HSGAL(32, 32, 100.0)
        self.HtrgGAT_layer_ST21 = HSGAL(64, 32, 100.0)
        self.HtrgGAT_layer_ST22 = HSGAL(32, 32, 100.0)
        self.pool_S = Pool(64)
        self.pool_T = Pool(64)
        self.pool_hS1 = Pool(32)
        self.pool_hT1 = Pool(32)
        self.pool_hS2 = Pool(32)
        self.pool_hT2 = Pool(32)
        self.out_layer = nn.Linear(160, 1)

    def _branch(self, first, second, pool_s, pool_t, out_t, out_s, master):
        t, s, m = first(out_t, out_s, master)
        s = pool_s(s)
        t = pool_t(t)
        dt, ds, dm = second(t, s, m)
        return t + dt, s + ds, m + dm

    def forward(self, feats):
        x = self.LL(feats).transpose(1, 2).unsqueeze(1)
        x = F.selu(self.first_bn(F.max_pool2d(x, (3, 3))))
        for block in self.encoder:
            x = block(x)
        x = F.selu(self.first_bn1(x))
        w = self.attention(x)
        e_s = torch.sum(x * F.softmax(w, dim=-1), dim=-1).transpose(1, 2) + self.pos_S
        out_s = self.pool_S(self.GAT_layer_S(e_s))
        e_t = torch.sum(x * F.softmax(w, dim=-2), dim=-2).transpose(1, 2)
        out_t = self.pool_T(self.GAT_layer_T(e_t))
        t1, s1, m1 = self._branch(self.HtrgGAT_layer_ST11, self.HtrgGAT_layer_ST12, self.pool_hS1, self.pool_hT1, out_t, out_s, self.master1)
        t2, s2, m2 = self._branch(self.HtrgGAT_layer_ST21, self.HtrgGAT_layer_ST22, self.pool_hS2, self.pool_hT2, out_t, out_s, self.master2)
        d = lambda z: F.dropout(z, 0.2, self.training)
        t = torch.max(d(t1), d(t2))
        s = torch.max(d(s1), d(s2))
        m = torch.max(d(m1), d(m2))
        hidden = torch.cat([t.abs().max(dim=1)[0], t.mean(dim=1), s.abs().max(dim=1)[0], s.mean(dim=1), m.squeeze(1)], dim=1)
        return self.out_layer(F.dropout(hidden, 0.5, self.training))


def check(fixture_dir):
    """Loads the reference weights into the transcription and compares the eval logits."""
    from safetensors.torch import load_file

    for set_name, dim in (("base768", 768), ("xlsr300m", 1024)):
        model = AasistSpec(dim)
        n = sum(p.numel() for p in model.parameters())
        weights = load_file(f"{fixture_dir}/backend_{set_name}_weights.safetensors")
        weights = {k: (v.long() if k.endswith("num_batches_tracked") else v) for k, v in weights.items()}
        model.load_state_dict(weights, strict=True)
        model.eval()
        io = load_file(f"{fixture_dir}/backend_{set_name}_io_eval.safetensors")
        with torch.no_grad():
            logits = model(io["ssl_feat"])
        diff = (logits - io["logits"]).abs().max().item()
        print(f"aasist_spec {set_name}: {n} parameters, max |logit - reference| = {diff:.2e}")
        assert diff < 1e-5 and n == {768: 414313, 1024: 447081}[dim]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        print("usage: aasist_spec.py --check FIXTURE_DIR", file=sys.stderr)
        sys.exit(2)
