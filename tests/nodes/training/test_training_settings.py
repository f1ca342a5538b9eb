"""What a saved state must match to be resumed: only the settings that change the weights."""

from __future__ import annotations

from nodes.training.trainer import TrainSettings

BEFORE_THIS_FAMILY_GREW = {
    "rank", "alpha", "learning_rate", "schedule", "warmup_steps", "batch_size", "seed",
    "targets", "caption_dropout", "min_snr_gamma", "base", "dataset",
}  # fmt: skip
"""The resume key of a U-Net LoRA with a constant schedule as TrainLoRA wrote it before
text-encoder pairs, full fine-tuning and priors (nodeflow 14e2d93): states saved then resume."""


def test_a_plain_unet_lora_keeps_the_resume_key_its_older_states_were_saved_with() -> None:
    key = TrainSettings().resume_key("base.safetensors", "demo:outlined:2000:0", "")
    assert set(key) == BEFORE_THIS_FAMILY_GREW
    assert key["targets"] == ["to_q", "to_k", "to_v", "to_out.0"]


def test_every_setting_that_changes_the_weights_enters_the_key() -> None:
    base = TrainSettings().resume_key("b", "d", "")
    changed = {
        "kind": TrainSettings(kind="full").resume_key("b", "d", ""),
        "te_targets": TrainSettings(te_targets=("q_proj",)).resume_key("b", "d", ""),
        "full_text_encoder": TrainSettings(full_text_encoder=True).resume_key("b", "d", ""),
        "prior": TrainSettings().resume_key("b", "d", "prior:abc"),
        "steps": TrainSettings(schedule="cosine").resume_key("b", "d", ""),
    }
    for name, key in changed.items():
        assert key != base, name
    with_prior = TrainSettings().resume_key("b", "d", "prior:abc")
    heavier = TrainSettings(prior_loss_weight=2.0).resume_key("b", "d", "prior:abc")
    assert heavier != with_prior
