"""Writes the bundled NER sample, `albert_jax/assets/samples/ner_sample/{train,dev}.conll`.

  python tests/make_ner_sample.py        # rewrites both files; tests/test_ner.py checks they match

Short English sentences made from the templates and name lists below (written for albert_jax;
the people and organizations are invented, the places are real), tagged PER / ORG / LOC / MISC
in IOB2, one `word tag` line per word. Deterministic: a fixed seed, no other input.
"""

from __future__ import annotations

import random
from pathlib import Path

FIRST = (
  "Anna Marco Priya Tomas Elena Kofi Yuki Laura Omar Ingrid Pavel Sofia David Amara Lucas Mei "
  "Hannah Ravi Nadia Felix Clara Jonas Leila Mateo Greta Samuel Irene Victor Zara Hugo"
).split()
LAST = (
  "Berger Okafor Lindqvist Moreau Tanaka Silva Novak Haddad Fischer Costa Petrov Ramirez Keller "
  "Osei Varga Duarte Nakamura Olsen Brandt Mensah"
).split()
ORGS = (
  "Northwind Bank|Bluefield University|Harbor Motors|Crestline Foods|the Aurora Institute|"
  "Redstone Energy|Silverleaf Press|Maple Rail|Orion Labs|Westgate Bank|Pinecrest College|"
  "Kestrel Airlines|Lumen Software|Granite Insurance|Cobalt Mining|Riverside Hospital"
).split("|")
PLACES = (
  "Paris|Berlin|Lisbon|Nairobi|Tokyo|Toronto|Madrid|Oslo|Cairo|Lima|Vienna|Dublin|Prague|Seoul|"
  "New York|Buenos Aires|Cape Town|Rio de Janeiro|Hong Kong|San Francisco|Kenya|Brazil|Norway|"
  "Canada|Japan|Chile|Ireland|Portugal|Egypt|Peru"
).split("|")
MISC = (
  "German|French|Brazilian|Japanese|Kenyan|Canadian|Olympic Games|World Cup|Nobel Prize|"
  "Christmas|Euro|Spanish|Irish|Tour de France|Oscar"
).split("|")
# {P} person, {O} organization, {L} place, {M} miscellaneous; other words are O.
TEMPLATES = (
  "{P} works for {O} in {L} .",
  "{P} joined {O} last year .",
  "{O} opened a new office in {L} .",
  "{P} flew from {L} to {L} on Monday .",
  "The {M} team arrived in {L} yesterday .",
  "{P} won the {M} in {L} .",
  "{O} said {P} will lead the project .",
  "Shares of {O} rose after the report .",
  "{P} and {P} met in {L} to discuss the deal .",
  "{O} hired {P} as its new director .",
  "A {M} writer visited {O} on Friday .",
  "{P} grew up in {L} but now lives in {L} .",
  "The mayor of {L} thanked {O} for the donation .",
  "{P} spoke {M} at the meeting .",
  "{O} and {O} signed an agreement in {L} .",
  "Fans in {L} celebrated the {M} .",
  "{P} , a doctor at {O} , spoke to reporters .",
  "Police in {L} are looking for {P} .",
  "{O} will build a factory near {L} .",
  "{P} left {O} after ten years .",
  "It rained all week in {L} .",
  "The report was published on Tuesday .",
  "{P} said the {M} was a great success .",
  "Prices in {L} fell for the third month .",
)
SIZES = {"train": 300, "dev": 100}
SEED = 14
OUT = Path(__file__).resolve().parents[1] / "albert_jax" / "assets" / "samples" / "ner_sample"


def _entity(slot: str, rng: random.Random) -> tuple[list[str], str]:
  if slot == "P":
    words = [rng.choice(FIRST)] + ([rng.choice(LAST)] if rng.random() < 0.7 else [])
    return words, "PER"
  pool, kind = {"O": (ORGS, "ORG"), "L": (PLACES, "LOC"), "M": (MISC, "MISC")}[slot]
  return rng.choice(pool).split(), kind


def sentence(template: str, rng: random.Random) -> list[tuple[str, str]]:
  """The (word, IOB2 tag) pairs of one filled-in template."""
  pairs = []
  for word in template.split():
    if word.startswith("{") and word.endswith("}"):
      words, kind = _entity(word[1], rng)
      if words[0] == "the":  # "the Aurora Institute": the article is not part of the name
        pairs.append(("the", "O"))
        words = words[1:]
      pairs += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
    else:
      pairs.append((word, "O"))
  return pairs


def generate() -> dict[str, str]:
  """split -> the file's text; sentences are distinct across both splits."""
  rng = random.Random(SEED)
  seen: set[tuple[tuple[str, str], ...]] = set()
  texts = {}
  for split, size in SIZES.items():
    sentences = []
    while len(sentences) < size:
      pairs = tuple(sentence(rng.choice(TEMPLATES), rng))
      if pairs not in seen:
        seen.add(pairs)
        sentences.append("\n".join(f"{w} {t}" for w, t in pairs) + "\n")
    texts[split] = "\n".join(sentences)
  return texts


if __name__ == "__main__":
  OUT.mkdir(parents=True, exist_ok=True)
  for split, text in generate().items():
    (OUT / f"{split}.conll").write_text(text, encoding="utf-8")
    print(OUT / f"{split}.conll", text.count("\n\n") + 1, "sentences")
