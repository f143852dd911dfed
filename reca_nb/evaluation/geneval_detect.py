"""GenEval's detector and colour reader on transformers: Mask2Former instances and CLIP zero-shot colours.

`Scorer.judge(image, record)` gives GenEval's verdict for one image: the detector's instances (every one the
detector reports; boxes are the masks' tight boxes) are filtered by `geneval_rules.keep`, and the rules of
`geneval_rules.evaluate` read colours through `Scorer.colors` (the object's mask composited onto #999 grey,
cropped to its box, zero-shot over GenEval's 10 colours x 3 templates).

    scorer = load_scorer()            # facebook/mask2former-swin-small-coco-instance + openai/clip-vit-large-patch14
    scorer = load_scorer(tiny=True)   # random models of the same classes, built offline (tests, CI)
"""
from __future__ import annotations

import torch

from reca_nb.evaluation.geneval_rules import CLASSNAMES, COLORS, Detection, box_of_mask, evaluate, keep

DETECTOR_ID = "facebook/mask2former-swin-small-coco-instance"
CLIP_ID = "openai/clip-vit-large-patch14"
TEMPLATES = ("a photo of a {c} {obj}", "a photo of a {c}-colored {obj}", "a photo of a {c} object")
GREY = (153, 153, 153)  # "#999", GenEval's background for the colour crops


class Scorer:
    """Mask2Former detections + CLIP colours -> GenEval verdicts for PIL images."""

    def __init__(self, detector, det_processor, clip, tokenizer, clip_processor, device=None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.detector, self.det_processor = detector.to(self.device).eval(), det_processor
        self.clip, self.tokenizer, self.clip_processor = clip.to(self.device).eval(), tokenizer, clip_processor
        n = detector.config.num_labels
        if n != len(CLASSNAMES):
            raise ValueError(f"the detector has {n} classes; GenEval needs the 80 COCO classes in COCO order")
        self._colour_heads = {}

    @torch.no_grad()
    def detect(self, image) -> dict:
        """{GenEval class name: [Detection]} of every instance the detector reports (no threshold yet)."""
        inputs = self.det_processor(images=image, return_tensors="pt").to(self.device)
        out = self.detector(pixel_values=inputs["pixel_values"].to(self.detector.dtype))
        res = self.det_processor.post_process_instance_segmentation(
            out, threshold=0.0, target_sizes=[image.size[::-1]], return_binary_maps=True)[0]
        found = {}
        masks = res["segmentation"]
        for k, seg in enumerate(res["segments_info"]):
            mask = masks[k].bool().cpu().numpy()
            box = box_of_mask(mask)
            if box is not None:
                found.setdefault(CLASSNAMES[seg["label_id"]], []).append(Detection(box, float(seg["score"]), mask))
        return found

    @torch.no_grad()
    def _colour_head(self, classname: str) -> torch.Tensor:
        """(10, D) unit text embeddings: per colour, the mean of the 3 normalised template embeddings."""
        if classname not in self._colour_heads:
            texts = [t.format(c=c, obj=classname) for c in COLORS for t in TEMPLATES]
            tok = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            emb = _features(self.clip.get_text_features(input_ids=tok["input_ids"],
                                                        attention_mask=tok["attention_mask"])).float()
            emb = torch.nn.functional.normalize(emb, dim=-1).view(len(COLORS), len(TEMPLATES), -1).mean(1)
            self._colour_heads[classname] = torch.nn.functional.normalize(emb, dim=-1)
        return self._colour_heads[classname]

    @torch.no_grad()
    def colors(self, image, detections, classname: str) -> list:
        """One colour per detection: the object's mask over a grey image, cropped to its box, read by CLIP."""
        from PIL import Image

        image = image.convert("RGB")
        grey = Image.new("RGB", image.size, GREY)
        crops = []
        for d in detections:
            shown = image if d.mask is None else Image.composite(image, grey, Image.fromarray(d.mask))
            crops.append(shown.crop(tuple(int(round(v)) for v in d.box[:4])))
        pixels = self.clip_processor(images=crops, return_tensors="pt")["pixel_values"].to(self.device)
        emb = _features(self.clip.get_image_features(pixel_values=pixels.to(self.clip.dtype))).float()
        logits = torch.nn.functional.normalize(emb, dim=-1) @ self._colour_head(classname).T
        return [COLORS[i] for i in logits.argmax(-1).tolist()]

    def judge(self, image, record: dict) -> dict:
        """GenEval's verdict on one PIL image for one metadata record."""
        image = image.convert("RGB")
        objects = keep(self.detect(image), record["tag"])
        correct, reason = evaluate(objects, record, lambda dets, name: self.colors(image, dets, name))
        return {"correct": bool(correct), "reason": reason,
                "details": {k: [[round(v, 1) for v in d.box] + [round(d.score, 3)] for d in ds]
                            for k, ds in objects.items()}}


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor in older transformers, an output with the projection in pooler_output
    in newer ones."""
    return out if torch.is_tensor(out) else out.pooler_output


def load_scorer(tiny: bool = False, device=None, detector_id: str = DETECTOR_ID, clip_id: str = CLIP_ID,
                clip_dtype=None) -> Scorer:
    """The GenEval scorer from the hub (detector in fp32; CLIP in fp16 on a GPU unless clip_dtype says
    otherwise), or tiny=True: random models of the same classes built offline."""
    if tiny:
        return Scorer(*_tiny_parts(), device=device)
    from transformers import AutoImageProcessor, AutoProcessor, CLIPModel, Mask2FormerForUniversalSegmentation

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = clip_dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    det = Mask2FormerForUniversalSegmentation.from_pretrained(detector_id)
    proc = AutoProcessor.from_pretrained(clip_id)
    return Scorer(det, AutoImageProcessor.from_pretrained(detector_id), CLIPModel.from_pretrained(clip_id, dtype=dtype),
                  proc.tokenizer, proc.image_processor, device=dev)


def _tiny_parts(size: int = 64):
    """Random Mask2Former (Swin backbone, 80 COCO labels) and CLIP with a byte-level tokenizer, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, \
        PreTrainedTokenizerFast, SwinConfig

    try:  # the PIL processors by name: the default ones warn when torchvision is missing, then fall back to these
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        from transformers import Mask2FormerImageProcessorPil as Mask2FormerImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor, Mask2FormerImageProcessor

    torch.manual_seed(0)
    swin = SwinConfig(image_size=size, embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    labels = {i: n for i, n in enumerate(CLASSNAMES)}
    det = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=swin, num_labels=len(labels), id2label=labels, label2id={n: i for i, n in labels.items()},
        hidden_dim=32, mask_feature_size=32, feature_size=32, num_queries=10, encoder_layers=1, decoder_layers=2,
        encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2, common_stride=4))
    det_proc = Mask2FormerImageProcessor(size={"height": size, "width": size}, do_reduce_labels=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok.add_special_tokens([bos, eos])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(alphabet) + 2, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, bos_token_id=tok.token_to_id(bos),
                         eos_token_id=tok.token_to_id(eos), pad_token_id=tok.token_to_id(eos)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16))
    clip_proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return det, det_proc, clip, fast, clip_proc
