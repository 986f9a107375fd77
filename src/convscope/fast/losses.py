"""The training losses of the feed-forward networks (fast/train.py runs the loop): Johnson et al.'s
perceptual losses for a per-style network, and AdaIN-lite's (distillation from VGG19 plus Huang &
Belongie's content and style losses)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import ImageError
from ..losses import gram, mean_std_loss, tv_loss
from .config import TrainArbitraryConfig, TrainStyleConfig
from .nets import ENCODER_LAYERS, Encoder, LiteAdaIN, adain, channel_stats


class PerceptualLoss:
    """Johnson et al.'s losses on the original VGG19, each made scale-free: content as the relative
    feature error at one layer, style as the relative Gram error per layer (divided by the mean
    squared target Gram, so every layer counts the same), plus total variation."""

    def __init__(self, style: torch.Tensor, config: TrainStyleConfig, device: torch.device, autocast,
                 layout: torch.memory_format = torch.contiguous_format):
        from ..nets import get_net

        self.vgg = get_net("vgg19", device=device).requires_grad_(False)
        self.vgg.use_channels_last(layout == torch.channels_last)
        self.config, self.autocast = config, autocast
        self.content_layer = self.vgg.resolve(config.content_layer)
        self.style_layers = [self.vgg.resolve(n) for n in config.style_layers]
        need, (h, w) = self.vgg.stride_of(self.style_layers), style.shape[-2:]
        if min(h, w) < need:  # features() would say "a 8x384 image": name the image and the option
            raise ImageError(f"the style image at --style-size {config.style_size} is {w}x{h}, under the {need} px "
                             "a side the deepest --style-layers need; use a less elongated style image or a larger "
                             "--style-size")
        with torch.no_grad(), autocast():
            feats = self.vgg.features(style.to(device), self.style_layers)
        self.targets = {n: gram(feats[n]) for n in self.style_layers}
        self.scales = {n: 1.0 / float(g.square().mean().clamp_min(1e-12)) for n, g in self.targets.items()}

    def __call__(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        with self.autocast():
            with torch.no_grad():
                target = self.vgg.features(content, [self.content_layer])[self.content_layer].float()
            feats = self.vgg.features(output, [self.content_layer, *self.style_layers])
        content_loss = F.mse_loss(feats[self.content_layer].float(), target) / target.square().mean().clamp_min(1e-12)
        style_loss = sum(F.mse_loss(gram(feats[n]), self.targets[n].expand(len(output), -1, -1)) * self.scales[n]
                         for n in self.style_layers) / len(self.style_layers)
        tv = tv_loss(output.float())
        total = cfg.content_weight * content_loss + cfg.style_weight * style_loss + cfg.tv_weight * tv
        return {"loss": total, "content": content_loss, "style": style_loss, "tv": tv}


def lite_losses(net: LiteAdaIN, teacher: Encoder, c: torch.Tensor, s: torch.Tensor, config: TrainArbitraryConfig,
                 autocast) -> dict[str, torch.Tensor]:
    """AdaIN-lite's losses for content batch c and style batch s. VGG19 (frozen) is teacher and loss
    network: `mimic` is the student's relative relu4_1 error on c and s (the mean of the two), the
    content and style losses are Huang & Belongie's, with the target built from VGG19's own features.
    The mimic term enters the total times the content target's mean square, so that mimic_weight 1
    weighs a relative feature error of the encoder like the same relative error of the content loss."""
    with autocast():
        with torch.no_grad():
            tc = teacher(c)["relu4_1"]
            ts = teacher(s)
            target = adain(tc, *channel_stats(ts["relu4_1"])).float()
        sc = net.encoder(c)["relu4_1"]
        ss = net.encoder(s)["relu4_1"]
        output = net.decoder(adain(sc, *channel_stats(ss)))
        of = teacher(output)
    mimic = sum(F.mse_loss(x.float(), t.float()) / t.float().square().mean().clamp_min(1e-12)
                for x, t in ((sc, tc), (ss, ts["relu4_1"]))) / 2
    content_loss = F.mse_loss(of["relu4_1"].float(), target)
    style_loss = sum(mean_std_loss(of[n].float(), ts[n].float()) for n in ENCODER_LAYERS)
    total = (content_loss + config.style_weight * style_loss
             + config.mimic_weight * mimic * target.square().mean())
    return {"loss": total, "content": content_loss, "style": style_loss, "mimic": mimic}
