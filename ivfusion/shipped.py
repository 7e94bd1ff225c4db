"""The weights shipped with the package, by name, and the weights specs every command accepts.

No torch here: the command line builds its help from it without loading the network.
"""
BUNDLED = "bundled"  # the default shipped weights (DEFAULT_NAME's), whatever IVFUSION_WEIGHTS says
UNTRAINED = "untrained"  # a freshly initialised network (seeded), for teaching contrasts only

# `--weights NAME` in every command, and the Lab's model menu. Each is a folder of the package's
# assets (assets/ in the repository) holding model.safetensors, config.json and a MODEL_CARD.md:
# how it was trained, on which pairs, and what it scores. name: (folder, what it is).
NAMED_WEIGHTS = {
    "v2": ("weights/isfuse-ivfusion", "ISFuse v2, trained by ivfusion (docs/research/cpu-runs.md)"),
}
DEFAULT_NAME = "v2"  # the weights of "bundled", load_model() and the Lab's default model

ACCEPTED_SPECS = ("a folder with model.safetensors and config.json, a .safetensors file, the authors' .pth, "
                  f"hf://owner/repo[/file], 'bundled', a shipped name ({', '.join(NAMED_WEIGHTS)}) or 'untrained'")
