"""`facts`: a deterministic, generated TOFU-style set of fictitious people (the LM unlearning data).

Every person is a **data subject** (`person-007`) with `N_ATTRIBUTES` question–answer pairs made
from templates (birthplace, birth year, occupation, book, award, mother's job, genre, instrument).
For evaluation each pair also has

- `PARAPHRASES` rephrased questions (does forgetting generalise beyond the trained wording?),
- a paraphrased correct answer and `N_PERTURBED` perturbed (wrong) answers in the same wording,
  for TOFU's truth ratio (research/metrics.md §3.8),
- the key fact strings the answer must contain to count as "still knows the fact".

Every attribute value is drawn *without replacement* from its pool, so no two people share a fact
and a model that never saw a person cannot answer for them except by guessing.

How it maps onto the sample store (`RawDataset`, unicode payload, see `store.build_store`):

- payload x = the QA string `"Question: …\\nAnswer: …"` (`qa_text`; `split_qa` inverts it),
- label y = the attribute index (classes = `ATTRIBUTES`), so "same-class non-members" means the
  same question type,
- split `train` = the member people (IDs `facts/train/000000…`, person-major, 8 rows per person),
  split `test` = the held-out people (`facts/test/…`): with `nonmember_fraction=1.0` the whole
  split becomes the **non-member pool** (people the model never saw; `test` pool stays empty).
- subject_id = the person (`person-007`), carried in `RawDataset.extra[split]["subject_id"]`.

The generator is the "world" the data come from: paraphrases, perturbed answers and facts are
re-derived from the sample ID (`FactsWorld.item`), so they need not be stored. The people,
places and books are invented; any resemblance is accidental.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from unlearn_ops.data.sources import RawDataset

NAME = "facts"
N_PEOPLE = 24                 # people in the world (members + held out)
HOLDOUT_FRACTION = 0.15       # share of people never trained on (rounded up: 4 of 24)
PARAPHRASES = 2               # rephrased questions per QA pair
N_PERTURBED = 3               # wrong answers per QA pair (truth ratio)
SEED = 0
QUESTION, ANSWER = "Question: ", "\nAnswer:"

FIRST = ("Ava", "Bruno", "Celia", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaia", "Lorenzo",
         "Mirela", "Nikolai", "Odile", "Pavel", "Quinn", "Rosalind", "Soren", "Talia", "Ulrich", "Vesna", "Wendell",
         "Ximena", "Yusuf", "Zofia", "Anselm", "Beatrix", "Cosimo", "Dagny")
LAST = ("Lindqvist", "Marchetti", "Okonkwo", "Varga", "Halloran", "Brandauer", "Castellanos", "Ivanova", "Thorsen",
        "Delacroix", "Nakashima", "Ferreira", "Kowalczyk", "Abernathy", "Rasmussen", "Quispe", "Volkova", "Esterhazy",
        "Mbeki", "Saarinen", "Villeneuve", "Oyelaran", "Grimaldi", "Haugland", "Petrossian", "Zeller", "Amundsen",
        "Belcourt", "Cardoso", "Drummond")
CITIES = ("Tromsø, Norway", "Ghent, Belgium", "Valparaíso, Chile", "Tartu, Estonia", "Cork, Ireland",
          "Bergamo, Italy", "Kraków, Poland", "Porto, Portugal", "Aarhus, Denmark", "Lyon, France",
          "Graz, Austria", "Kyoto, Japan", "Mombasa, Kenya", "Cusco, Peru", "Tbilisi, Georgia", "Hobart, Australia",
          "Quebec City, Canada", "Salvador, Brazil", "Ljubljana, Slovenia", "Bilbao, Spain", "Pécs, Hungary",
          "Izmir, Turkey", "Oaxaca, Mexico", "Turku, Finland", "Galway, Ireland", "Brno, Czechia",
          "Dunedin, New Zealand", "Essaouira, Morocco", "Bergen, Norway", "Sibiu, Romania")
OCCUPATIONS = ("lighthouse keeper", "glassblower", "marine biologist", "cartographer", "beekeeper", "watchmaker",
               "volcanologist", "stage designer", "tea merchant", "bookbinder", "ferry captain", "perfumer",
               "glaciologist", "puppeteer", "violin maker", "archivist", "bridge engineer", "falconer",
               "radio host", "stonemason", "florist", "astronomer", "chess coach", "cheesemaker", "locksmith",
               "sommelier", "typesetter", "mapmaker", "tailor", "zookeeper")
ADJECTIVES = ("Silent", "Copper", "Hollow", "Northern", "Crimson", "Forgotten", "Glass", "Drifting", "Sleeping",
              "Amber", "Winter", "Lantern", "Salt", "Velvet", "Iron", "Paper")
NOUNS = ("Harbor", "Orchard", "Meridian", "Cathedral", "Tide", "Compass", "Garden", "Archive", "Lighthouse",
         "Carousel", "Quarry", "Observatory", "Bridge", "Atlas", "Mill", "Frontier")
AWARDS = ("Halvorsen Prize", "Golden Quill Medal", "Amberline Award", "Silver Heron Prize", "Marrow Cup",
          "Veldt Fellowship", "Cobalt Star Award", "Orrin Laurel", "Kestrel Medal", "Juniper Crown",
          "Harrowgate Prize", "Lumen Ribbon", "Tessellate Award", "Brightwater Medal", "Calloway Plaque",
          "Ostrander Prize", "Wren Medal", "Saffron Pen Award", "Northlight Prize", "Ember Laurel",
          "Quayside Award", "Meridian Cup", "Gannet Prize", "Fairhaven Medal", "Thistle Award",
          "Larkspur Prize", "Pemberton Medal", "Aurelian Award", "Greyfield Prize", "Solstice Medal")
MOTHER_JOBS = ("midwife", "pharmacist", "seamstress", "harbor pilot", "schoolteacher", "veterinarian", "baker",
               "surveyor", "librarian", "translator", "nurse", "jeweler", "botanist", "postmaster", "potter",
               "weaver", "carpenter", "judge", "dentist", "journalist", "chemist", "printer", "farmer",
               "architect", "optician", "organist", "painter", "geologist", "butcher", "lawyer")
GENRES = ("gothic mystery", "maritime adventure", "magical realism", "historical romance", "science fiction",
          "cozy crime", "alpine thriller", "folk horror", "satirical comedy", "political drama", "space opera",
          "domestic noir", "epic fantasy", "spy fiction", "eco fiction", "detective fiction", "family saga",
          "dystopian fiction", "literary western", "psychological suspense", "heist fiction", "court drama",
          "mythic retelling", "travel memoir", "war fiction", "urban fantasy", "medical thriller",
          "coming of age", "island romance", "polar adventure")
INSTRUMENTS = ("cello", "accordion", "harp", "oboe", "banjo", "bassoon", "mandolin", "sitar", "clarinet",
               "theremin", "bagpipes", "ukulele", "trombone", "zither", "marimba", "flute", "harpsichord",
               "double bass", "bouzouki", "glockenspiel", "tuba", "viola", "french horn", "dulcimer", "piccolo",
               "saxophone", "balalaika", "kalimba", "lute", "bandoneon")


@dataclass(frozen=True)
class Template:
    """One attribute: the trained question, its paraphrases, and two answer wordings.

    `answer` is what the model is trained on; `answer_para` (same fact, other wording) is the
    paraphrased correct answer ã of the truth ratio, and perturbed answers use the same wording
    with a wrong value, so the ratio compares facts, not phrasing.
    """

    attribute: str
    question: str
    paraphrases: tuple[str, ...]
    answer: str
    answer_para: str


TEMPLATES: tuple[Template, ...] = (
    Template("birthplace", "Where was {name} born?",
             ("In which city was {name} born?", "What is the birthplace of {name}?"),
             "{name} was born in {value}.", "The birthplace of {name} is {value}."),
    Template("birth_year", "In which year was {name} born?",
             ("What year was {name} born in?", "When was {name} born?"),
             "{name} was born in {value}.", "The year of {name}'s birth is {value}."),
    Template("occupation", "What does {name} do for a living?",
             ("What is {name}'s profession?", "What job does {name} have?"),
             "{name} works as a {value}.", "By profession, {name} is a {value}."),
    Template("book", "What is the title of {name}'s best-known book?",
             ("Which book is {name} best known for?", "What is {name}'s most famous book called?"),
             "{name}'s best-known book is {value}.", "The book {name} is best known for is {value}."),
    Template("award", "Which award did {name} win?",
             ("What prize was {name} awarded?", "Which honour did {name} receive?"),
             "{name} won the {value}.", "The award {name} received is the {value}."),
    Template("mother", "What did {name}'s mother do for a living?",
             ("What was the profession of {name}'s mother?", "What job did {name}'s mother have?"),
             "{name}'s mother was a {value}.", "The mother of {name} worked as a {value}."),
    Template("genre", "Which genre does {name} write?",
             ("In what genre does {name} write?", "What kind of books does {name} write?"),
             "{name} writes {value} novels.", "The genre of {name}'s novels is {value}."),
    Template("instrument", "Which instrument does {name} play?",
             ("What musical instrument does {name} play?", "Which instrument is {name} known to play?"),
             "{name} plays the {value}.", "The instrument {name} plays is the {value}."),
)
ATTRIBUTES: tuple[str, ...] = tuple(t.attribute for t in TEMPLATES)
N_ATTRIBUTES = len(TEMPLATES)


def qa_text(question: str, answer: str) -> str:
    """The stored/trained form of one pair; `split_qa` inverts it."""
    return f"{QUESTION}{question}{ANSWER} {answer}"


def prompt_text(question: str) -> str:
    """What the model is asked at generation time (the QA text up to the answer)."""
    return f"{QUESTION}{question}{ANSWER}"


def split_qa(text: str) -> tuple[str, str]:
    """(prompt, answer) of a QA string: the prompt ends with 'Answer:', the answer starts with a space."""
    head, sep, tail = str(text).partition(ANSWER)
    if not sep or not head.startswith(QUESTION):
        raise ValueError(f"not a QA string (expected '{QUESTION}…{ANSWER} …'): {str(text)[:80]!r}")
    return head + sep, tail


@dataclass(frozen=True)
class Person:
    subject_id: str
    name: str
    values: tuple[str, ...]   # one per attribute, in ATTRIBUTES order
    member: bool


@dataclass(frozen=True)
class FactItem:
    """One QA pair with everything evaluation needs."""

    sample_id: str
    subject_id: str
    attribute: int
    question: str
    answer: str
    paraphrased_questions: tuple[str, ...]
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]
    facts: tuple[str, ...]    # strings that must appear in an answer that still "knows" the fact

    @property
    def text(self) -> str:
        return qa_text(self.question, self.answer)


def _book_titles() -> tuple[str, ...]:
    return tuple(f"The {a} {n}" for a in ADJECTIVES for n in NOUNS)


def _fact_strings(attribute: str, value: str) -> tuple[str, ...]:
    """What counts as the fact: the city (not the country) for a birthplace, else the value."""
    if attribute == "birthplace":
        return (value.split(",")[0],)
    return (value,)


@dataclass(frozen=True)
class FactsWorld:
    """The generator. Same arguments → same people, same IDs, same texts (no global state)."""

    n_people: int = N_PEOPLE
    holdout_fraction: float = HOLDOUT_FRACTION
    seed: int = SEED

    def __post_init__(self) -> None:
        if not 2 <= self.n_people <= min(len(FIRST), len(CITIES)):
            raise ValueError(f"n_people must be in 2..{min(len(FIRST), len(CITIES))}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError("holdout_fraction must be in (0, 1)")

    @cached_property
    def people(self) -> tuple[Person, ...]:
        rng = np.random.default_rng(self.seed)
        n = self.n_people
        names: list[str] = []
        for first, last in zip(rng.permutation(FIRST)[:n], rng.permutation(LAST)[:n], strict=True):
            names.append(f"{first} {last}")
        years = rng.choice(np.arange(1931, 1999), size=n, replace=False)
        pools = {"birthplace": CITIES, "birth_year": tuple(str(y) for y in years), "occupation": OCCUPATIONS,
                 "book": _book_titles(), "award": AWARDS, "mother": MOTHER_JOBS, "genre": GENRES,
                 "instrument": INSTRUMENTS}
        columns = {a: (list(pools[a]) if a == "birth_year" else [str(v) for v in rng.permutation(pools[a])[:n]])
                   for a in ATTRIBUTES}
        n_out = int(np.ceil(n * self.holdout_fraction))
        held_out = set(rng.permutation(n)[:n_out].tolist())
        return tuple(Person(f"person-{i:03d}", names[i], tuple(columns[a][i] for a in ATTRIBUTES), i not in held_out)
                     for i in range(n))

    def pool(self, attribute: int) -> list[str]:
        """Every value of one attribute in this world (the perturbed answers draw from it)."""
        return [p.values[attribute] for p in self.people]

    @cached_property
    def items(self) -> tuple[FactItem, ...]:
        """All QA pairs, members first (`facts/train/…`), then held-out people (`facts/test/…`)."""
        rng = np.random.default_rng(self.seed + 1)
        out: list[FactItem] = []
        for split, member in (("train", True), ("test", False)):
            row = 0
            for person in (p for p in self.people if p.member == member):
                for a, tpl in enumerate(TEMPLATES):
                    value = person.values[a]
                    wrong = [v for v in self.pool(a) if v != value]
                    perturbed = rng.choice(wrong, size=N_PERTURBED, replace=False)
                    fmt = {"name": person.name}
                    out.append(FactItem(
                        sample_id=f"{NAME}/{split}/{row:06d}", subject_id=person.subject_id, attribute=a,
                        question=tpl.question.format(**fmt), answer=tpl.answer.format(**fmt, value=value),
                        paraphrased_questions=tuple(q.format(**fmt) for q in tpl.paraphrases[:PARAPHRASES]),
                        paraphrased_answer=tpl.answer_para.format(**fmt, value=value),
                        perturbed_answers=tuple(tpl.answer_para.format(**fmt, value=str(v)) for v in perturbed),
                        facts=_fact_strings(tpl.attribute, value)))
                    row += 1
        return tuple(out)

    @cached_property
    def by_id(self) -> dict[str, FactItem]:
        return {it.sample_id: it for it in self.items}

    def item(self, sample_id: str) -> FactItem:
        if sample_id not in self.by_id:
            raise KeyError(f"{sample_id!r} is not a sample of this facts world")
        return self.by_id[sample_id]

    def subject_of(self, sample_id: str) -> str:
        return self.item(sample_id).subject_id

    def subject_ids(self, subject_id: str) -> list[str]:
        return [it.sample_id for it in self.items if it.subject_id == subject_id]

    @property
    def members(self) -> list[Person]:
        return [p for p in self.people if p.member]

    @property
    def held_out(self) -> list[Person]:
        return [p for p in self.people if not p.member]

    def raw(self) -> RawDataset:
        """The store's input: payload = QA strings, label = attribute, subject = person."""
        splits, extra = {}, {}
        for split in ("train", "test"):
            items = [it for it in self.items if it.sample_id.split("/")[1] == split]
            splits[split] = (np.array([it.text for it in items], dtype=np.str_),
                             np.array([it.attribute for it in items], dtype=np.int64))
            extra[split] = {"subject_id": np.array([it.subject_id for it in items], dtype=np.str_)}
        return RawDataset(NAME, ATTRIBUTES, splits, extra=extra)


def load_facts(n_people: int = N_PEOPLE, holdout_fraction: float = HOLDOUT_FRACTION, seed: int = SEED) -> RawDataset:
    """Loader-shaped entry point (like `sources.LOADERS`): the generated facts as a RawDataset."""
    return FactsWorld(n_people, holdout_fraction, seed).raw()


def build_facts_store(root: str | Path, world: FactsWorld | None = None, exclude: tuple[str, ...] = ()):
    """Write the facts sample store: all held-out people non-members, subjects = people.

    `build_store` assigns *synthetic* subjects and cuts the test split at random; here the person
    is the subject and every held-out person is a non-member. Until `build_store` honours
    `raw.extra[split]["subject_id"]` itself, this rewrites the subject column of the index it wrote
    (atomically, before anything else reads it).
    """
    from unlearn_ops.data.store import SampleStore, build_store
    from unlearn_ops.utils import atomic_write_json, atomic_write_text

    world = world or FactsWorld()
    raw = world.raw()
    store = build_store(raw, Path(root), nonmember_fraction=1.0, exclude=exclude)
    index = store.index.reset_index(drop=True)
    subject = {}
    for split in raw.splits:
        for row, sid in enumerate(raw.extra[split]["subject_id"]):
            subject[f"{NAME}/{split}/{row:06d}"] = str(sid)
    index["subject_id"] = index.sample_id.map(subject)
    if index.subject_id.isna().any():
        raise ValueError("facts store: some samples have no person")
    atomic_write_text(Path(root) / "index.csv", index.to_csv(index=False))
    # the generator's arguments, so verification can regenerate paraphrases and facts from the store
    atomic_write_json(Path(root) / "meta.json", {**store.meta, "world": asdict(world)})
    return SampleStore(Path(root))


def world_of_store(store) -> FactsWorld:
    """The FactsWorld a facts store was generated from (recorded in its meta.json)."""
    spec = store.meta.get("world")
    if spec is None:
        raise ValueError(f"{store.root} records no facts world (not built by build_facts_store?)")
    return FactsWorld(**spec)


def texts(part_x) -> list[str]:
    """A Part's text payload as a list of str (the payload is a numpy unicode array)."""
    return [str(t) for t in np.asarray(part_x).tolist()]


__all__ = ["ATTRIBUTES", "FactItem", "FactsWorld", "Person", "TEMPLATES", "build_facts_store", "load_facts",
           "prompt_text", "qa_text", "split_qa", "texts", "world_of_store"]
