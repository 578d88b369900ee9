"""Load a pepo-written checkpoint with plain transformers, in an interpreter where pepo is NOT
importable, and run one image + text forward. Run by tests/scale/test_checkpoint.py as

    python -I -S tests/scale/plain_transformers_load.py SITE_PACKAGES CHECKPOINT IMAGE.png OUT.pt

``-I -S``: no PYTHONPATH, no user site, no ``.pth`` files (pepo's editable install is one); only
SITE_PACKAGES is put back on ``sys.path``. Prints a JSON report; saves input ids and logits to OUT.pt.
"""

import importlib.util
import json
import sys

site_packages, checkpoint, image_file, out_file = sys.argv[1:5]
sys.path.append(site_packages)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer  # noqa: E402

report = {}
try:
    import pepo  # noqa: F401

    report["pepo_importable"] = True
except ModuleNotFoundError:
    report["pepo_importable"] = False

model = AutoModelForImageTextToText.from_pretrained(checkpoint, local_files_only=True).eval()
tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
image_processor = AutoImageProcessor.from_pretrained(checkpoint, local_files_only=True)
report.update(model=type(model).__name__, tokenizer=type(tokenizer).__name__,
              image_processor=type(image_processor).__name__, torchvision=importlib.util.find_spec("torchvision") is not None)
try:  # the stock Qwen2.5-VL processor builds a video processor, which needs torchvision
    processor = AutoProcessor.from_pretrained(checkpoint, local_files_only=True)
    report.update(auto_processor=type(processor).__name__, auto_processor_has_image_processor=hasattr(processor, "image_processor"))
except ImportError as error:
    report.update(auto_processor_error=str(error))

# What Qwen2_5_VLProcessor does, by hand: one <|image_pad|> per merged patch.
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle ?"}]}]
text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
images = image_processor(images=[Image.open(image_file)], return_tensors="pt")
n_image_tokens = int(images["image_grid_thw"].prod()) // image_processor.merge_size**2
text = text.replace("<|image_pad|>", "<|image_pad|>" * n_image_tokens)
input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
mm_token_type_ids = (input_ids == model.config.image_token_id).long()
with torch.no_grad():
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=mm_token_type_ids,
                   pixel_values=images["pixel_values"], image_grid_thw=images["image_grid_thw"]).logits
torch.save({"input_ids": input_ids, "logits": logits}, out_file)
print(json.dumps(report))
