"""The lesson on the Lab's first tab: steps that each set the controls with one click, ask a
question and say what to look for.

Each step changes one thing from the step before it (the seed, the kind of masking, the
dropped image, the model), so that what a student sees can be put down to that one change.
Every step is one intervention alone, never two combined. The steps run offline except the
authors' checkpoint, which is downloaded on first use: its card says so, and so does the
text under the model menu while it cannot be loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .examples import DEFAULT_EXAMPLE
from .models import DEFAULT_CHOICE, OFFICIAL_CHOICE, UNTRAINED_CHOICE
from .settings import DEFAULT_HOLE_PERCENT, DEFAULT_HOLES


@dataclass(frozen=True)
class Step:
    """One lesson step: its title, what it changes from the step before, its question, what
    to look for, and the controls it sets (`controls`: the page's control names)."""

    title: str
    changes: str
    question: str
    look_for: str
    controls: dict = field(default_factory=dict)
    needs_download: bool = False


def _controls(complementary=False, random_masking=False, dropout="none", seed=0, model=DEFAULT_CHOICE) -> dict:
    return dict(model=model, complementary=complementary, random_masking=random_masking, dropout=dropout,
                hole_percent=DEFAULT_HOLE_PERCENT, holes=DEFAULT_HOLES, seed=seed)


EXAMPLE = DEFAULT_EXAMPLE  # every step uses the glare scene: it has a story to tell
STEPS: tuple[Step, ...] = (
    Step("Hide parts of each image", "complementary masking, seed 0",
         "Each hole hides a square of one image while the other image still shows it. Where does the fused image "
         "change, and by how much?",
         "The change map next to the fused images: bright only at the holes? Then the other image filled them in.",
         _controls(complementary=True)),
    Step("Move the holes", "only the seed: 0 to 1",
         "The holes fall elsewhere. Do the gates move with them, or do they stay where they were?",
         "The gates' change column: red or blue patches where the new holes are, white elsewhere.",
         _controls(complementary=True, seed=1)),
    Step("Let the holes overlap", "only the kind of masking: complementary to random",
         "Random masks may hide the same spot in both images. What happens where nothing shows it?",
         "Spots in the fused change map brighter than any in step 2: there no image could fill the hole.",
         _controls(random_masking=True, seed=1)),
    Step("Drop the infrared image", "masking off, the whole infrared image hidden instead",
         "Without infrared, what disappears from the night scene?",
         "The people hidden by the glare: bright in the fused change map. Which gate level changes most?",
         _controls(dropout="drop infrared")),
    Step("Drop the visible image", "which image is dropped: infrared to visible",
         "Now only infrared is left. What does the network still get right?",
         "The output turns grey (its colour came from the visible image); shapes of warm objects remain.",
         _controls(dropout="drop visible")),
    Step("An untrained network", "only the model: trained to untrained",
         "Same intervention, random weights. Are its gates telling anything?",
         "Gates with no relation to the scene: what the trained gates show is learnt, not built in.",
         _controls(dropout="drop infrared", model=UNTRAINED_CHOICE)),
    Step("The authors' checkpoint", "only the model: to the paper's released weights",
         "Do the authors' gates respond to dropping infrared as the bundled model's do?",
         "Compare with step 4. This step downloads the checkpoint (a small file) on first use: offline it "
         "cannot run, and the text under the model menu says so.",
         _controls(dropout="drop infrared", model=OFFICIAL_CHOICE), needs_download=True),
)
CHOICES = tuple(f"{k}. {s.title}" for k, s in enumerate(STEPS, start=1))


def step_of(choice: str | None) -> Step | None:
    """The step a menu choice names (None for anything else)."""
    return dict(zip(CHOICES, STEPS)).get(choice)


def card(step: Step | None) -> str:
    """The step's card in Markdown."""
    if step is None:
        return ("**Lesson**: pick a step. Each sets the controls for you, changing one thing from the step before; "
                "then press **Fuse**.")
    k = STEPS.index(step) + 1
    text = (f"**Step {k} of {len(STEPS)}: {step.title}** (changes {step.changes}). Press **Fuse**.  \n"
            f"**Question:** {step.question}  \n**Look for:** {step.look_for}")
    if step.needs_download:
        text += "  \n*Needs a download of the authors' checkpoint; offline this step cannot run.*"
    return text
