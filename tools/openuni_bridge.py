"""OpenUni-mini bridge experiments behind data/README.md ("Follow-up"): why does the base's T2I stay at chance?

A research script, not part of the package: it patches `OpenUniMini` at run time. Each mode prints what the
README quotes. Run from the repository root with the project's Python, one thread per run (2-core machines):

    # stage 0 ("SANA pretraining"): the DiT reads the prompt through its OWN word table, VLM and meta-queries
    # bypassed; --connector=True routes that table through the model's connector first. Other flags go to
    # `python -m reca_nb.build.pretrain` (e.g. --lambda_i2t=0 for T2I only).
    python tools/openuni_bridge.py words --dest=/tmp/ou_words --threads=1 --progress=False
    # ... with --source=llm-table (the VLM LLM's embedding table) or --source=table-llm (the word table read
    # through the VLM's trainable Qwen2 layers): the links between the word route and the VLM route
    # stage 1 (OpenUni's first stage): VLM -> meta-queries -> connector drive the FROZEN stage-0 DiT.
    #   --distill=0: flow loss only, through reca_nb's train() loop (I2T continues unless --lambda_i2t=0)
    #   --distill=W: W * MSE(DiT velocity with the bridge, with the word table) + --flow * flow loss, own loop
    python tools/openuni_bridge.py bridge --init=/tmp/ou_words/openuni.safetensors --distill=1 --flow=1 \
        --steps=1200 [--model.connector_input=all] [--prompt_only=True]
    # linear probes of a checkpoint's VLM: token identity per prompt position, bag of words from the queries
    python tools/openuni_bridge.py probe --init=/tmp/ou_words/openuni.safetensors
"""
from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import reca_nb.models.openuni as ou
from reca_nb.config import parse_overrides

INIT_PREFIXES = ("dit.", "llm.", "projector.")  # what stage 1 takes from stage 0


def word_ids(tok, prompts, drop):
    """[<t2i>] prompt, right-padded -> ids (B, L), keep-mask (B, L); dropped rows keep only <t2i>."""
    seqs = [[tok.stoi["<t2i>"]] + ([] if d else tok.encode(p)) for p, d in zip(prompts, drop.tolist())]
    L = max(len(s) for s in seqs)
    ids = torch.tensor([s + [tok.pad_id] * (L - len(s)) for s in seqs])
    return ids, (ids != tok.pad_id).long()


# ----------------------------------------------------------------------------- stage 0: the DiT's own words
def patch_words(through_connector: bool, source: str = "table"):
    """source: "table" = the DiT's own word table (N(0,1) init); "llm-table" = the VLM LLM's input-embedding
    table instead (Qwen2 init, std 0.02; trained by the generation loss); "table-llm" = the word table read
    through the VLM's Qwen2 layers (trainable, right-padded) -- the links between the word route and the VLM
    route, one at a time. The two "llm" sources imply --connector=True."""
    if source not in ("table", "llm-table", "table-llm"):
        raise SystemExit(f"--source must be table, llm-table or table-llm, got {source!r}")
    through_connector = through_connector or source != "table"
    init, groups = ou.OpenUniMini.__init__, ou.OpenUniMini.parameter_groups

    def __init__(self, *a, **k):
        init(self, *a, **k)
        self.emb_direct = nn.Embedding(len(self.tok), self.config.d_llm)  # SANA's text encoder, in miniature

    def condition(self, prompts, cond=None, drop=None, return_mask=False):
        drop = torch.zeros(len(prompts), dtype=torch.bool) if drop is None else drop.bool().cpu()
        ids, mask = word_ids(self.tok, prompts, drop)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if source == "llm-table":
            h = self.llm.get_input_embeddings()(ids)
        elif source == "table-llm":
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            h = self.llm.model(inputs_embeds=self.emb_direct(ids), attention_mask=mask,
                               position_ids=pos).last_hidden_state
        else:
            h = self.emb_direct(ids)
        if through_connector:
            linear, encoder = self.connector
            h = encoder(linear(h), src_key_padding_mask=~mask.bool())
        ctx = h * mask[..., None]
        return (ctx, mask) if return_mask else ctx

    def parameter_groups(self):
        g = groups(self)
        g["generation"] = g["generation"] + ["emb_direct.weight"]
        return g

    ou.OpenUniMini.__init__, ou.OpenUniMini.condition = __init__, condition
    ou.OpenUniMini.parameter_groups = parameter_groups


# ----------------------------------------------------------------------------- stage 1: the bridge
def load_stage0(model, path):
    from safetensors.torch import load_file

    sd = load_file(path)
    model.load_state_dict({k: v for k, v in sd.items() if k.startswith(INIT_PREFIXES)}, strict=False)
    return sd["emb_direct.weight"]


def bridge_flow(init_path: str, argv: list):
    """Flow loss only, reca_nb's pretrain loop, the DiT in the frozen group."""
    from reca_nb.build import pretrain

    init, groups = ou.OpenUniMini.__init__, ou.OpenUniMini.parameter_groups

    def __init__(self, *a, **k):
        init(self, *a, **k)
        load_stage0(self, init_path)

    def parameter_groups(self):
        g = groups(self)
        dit = [n for n in g["generation"] if n.startswith("dit.")]
        g["generation"] = [n for n in g["generation"] if n not in dit]
        g["frozen"] = g["frozen"] + dit
        return g

    ou.OpenUniMini.__init__, ou.OpenUniMini.parameter_groups = __init__, parameter_groups
    return pretrain.main(["--arch=openuni"] + argv)


def bridge_distill(init_path: str, steps: int, distill: float, flow: float, prompt_only: bool, model_kw: dict,
                   lr: float = 1e-3, batch: int = 32, out: str | None = None, eval_: bool = True):
    """queries + connector trained onto the frozen DiT: distill * ||v(bridge) - v(words)||^2 + flow * flow."""
    from reca_nb.world.data import Batches
    from reca_nb.build.pretrain import evaluate

    torch.manual_seed(0)
    m = ou.OpenUniMini(ou.OpenUniMiniConfig(**model_kw))
    emb = load_stage0(m, init_path)
    for n, p in m.named_parameters():
        p.requires_grad_(n == "queries" or n.startswith("connector."))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, weight_decay=0.01,
                            betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    data, t0 = Batches(32, 4000, 2000), time.time()
    m.train()
    for step in range(1, steps + 1):
        images, prompts = data.t2i(batch)
        with torch.no_grad():
            x0 = m.ae.encode(images).float()
        drop = torch.rand(batch) < m.config.cfg_drop
        ctx, cm = m.condition(prompts, None, drop, return_mask=True)
        if prompt_only:  # the DiT sees the prompt positions only (connector_input="all")
            cm = cm.clone()
            cm[:, -(1 + m.config.num_queries):] = 0
            ctx = ctx * cm[..., None]
        sigma, noise = torch.rand(batch), torch.randn_like(x0)
        s = sigma[:, None, None, None]
        xt = (1 - s) * x0 + s * noise
        with torch.no_grad():
            ids, wm = word_ids(m.tok, prompts, drop)
            vt = m.dit(xt, encoder_hidden_states=F.embedding(ids, emb) * wm[..., None], timestep=1000 * sigma,
                       encoder_attention_mask=wm).sample
        v = m.dit(xt, encoder_hidden_states=ctx, timestep=1000 * sigma, encoder_attention_mask=cm).sample
        ld, lf = F.mse_loss(v, vt), F.mse_loss(v, noise - x0)
        opt.zero_grad()
        (distill * ld + flow * lf).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"step {step} distill {ld.item():.4f} flow {lf.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    if eval_:
        print("scores", json.dumps(evaluate(m, "openuni", progress=False)), flush=True)
    if out:
        m.save(out)


# ----------------------------------------------------------------------------- probes
def ridge(Xtr, Ytr, Xte, lam=1.0):
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-5
    A, B = (Xtr - mu) / sd, (Xte - mu) / sd
    W = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1]), A.T @ (Ytr - Ytr.mean(0)))
    return B @ W + Ytr.mean(0)


@torch.no_grad()
def probe(init_path: str, n_train: int = 1000, n_test: int = 200):
    """(1) token identity from the VLM's last hidden state at each prompt position (T2I input, no image);
    (2) words + adjacent word pairs (multi-hot) from the concatenated meta-query outputs (connector input)."""
    from safetensors.torch import load_file

    from reca_nb.world.data import t2i_pool

    sd = load_file(init_path)
    sd.pop("emb_direct.weight", None)  # a stage-0 checkpoint: its word table is not the VLM's
    m = ou.OpenUniMini()  # default config (all runs in data/README used it)
    m.load_state_dict(sd)
    m.eval()
    P = t2i_pool(n_train + n_test, data_seed=11, disk=False).texts
    tok = m.tok
    X, Y = [], []
    for p in P:
        ids = [tok.stoi["<t2i>"]] + tok.encode(p) + [tok.stoi["<soi>"]]
        h = m.llm.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        X.append(h[1:-1])
        Y.append(torch.tensor(ids[1:-1]))
    Xtr, Ytr = torch.cat(X[:n_train]), torch.cat(Y[:n_train])
    Xte, Yte = torch.cat(X[n_train:]), torch.cat(Y[n_train:])
    pred = ridge(Xtr, F.one_hot(Ytr, len(tok)).float(), Xte).argmax(1)
    print(f"token identity per prompt position: {(pred == Yte).float().mean().item():.3f} held-out accuracy")

    feats = {}
    m.hidden_norm.register_forward_hook(lambda mod, inp, out: feats.update(x=inp[0]))
    Q = []
    for i in range(0, len(P), 100):
        m.condition(P[i:i + 100])
        Q.append(feats["x"].reshape(len(P[i:i + 100]), -1))
    Q = torch.cat(Q)
    labels = lambda p: set(p.split()) | {a + "_" + b for a, b in zip(p.split(), p.split()[1:])}  # noqa: E731
    names = sorted(set().union(*map(labels, P)))
    Yb = torch.tensor([[float(n in labels(p)) for n in names] for p in P])
    hit = ridge(Q[:n_train], Yb[:n_train], Q[n_train:]) > 0.5
    exact = (hit == Yb[n_train:].bool()).all(1).float().mean().item()
    print(f"bag of words + word pairs from the meta-queries: {exact:.3f} held-out exact ({len(names)} labels)")


def main(argv):
    if not argv or argv[0] not in ("words", "bridge", "probe"):
        raise SystemExit(__doc__)
    mode, args = argv[0], parse_overrides(argv[1:])
    torch.set_num_threads(int(args.get("threads", 1)))
    if mode == "words" or (mode == "bridge" and args.get("distill", 0) == 0):
        if "dest" not in args:  # pretrain's default dest is data/checkpoints: never let an experiment land there
            raise SystemExit(f"{mode}: --dest=DIR is required (the checkpoint and its MANIFEST go there)")
    elif "threads" in args:  # the own-loop modes set threads here and take no pretrain flags
        args.pop("threads")
    if mode == "words":
        patch_words(bool(args.pop("connector", False)), str(args.pop("source", "table")))
        from reca_nb.build import pretrain

        return pretrain.main(["--arch=openuni"] + [f"--{k}={v}" for k, v in args.items()])
    init = args.pop("init")
    if mode == "probe":
        return probe(init)
    distill = float(args.pop("distill", 0))
    if distill == 0:
        return bridge_flow(init, [f"--{k}={v}" for k, v in args.items()])
    model_kw = {k[6:]: args.pop(k) for k in list(args) if k.startswith("model.")}
    known = ("steps", "flow", "prompt_only", "out", "batch", "eval")
    if set(args) - set(known):
        raise SystemExit(f"bridge --distill: unknown flags {sorted(set(args) - set(known))}; valid: {known}")
    return bridge_distill(init, int(args.get("steps", 1200)), distill, float(args.get("flow", 1.0)),
                          bool(args.get("prompt_only", False)), model_kw, out=args.get("out"),
                          batch=int(args.get("batch", 32)), eval_=args.get("eval", True) is not False)


if __name__ == "__main__":
    main(sys.argv[1:])
