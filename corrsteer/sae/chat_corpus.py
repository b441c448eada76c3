"""Offline SAE training text that looks like what CorrSteer encodes: chat-formatted prompts and the model's own answers.

`corrsteer run` encodes the residual stream of chat-formatted task prompts and of the model's greedy answers to them.
SAEs trained only on docstrings fit that text worse (FVE 0.51 at layer 28 on task prompts vs 0.74 on
docstrings). So the trainer also sees a broad built-in set of instructions and questions, generated here from
templates (no download): open requests on ~170 topics in ~30 instruction types, plus task-like formats (letter multiple
choice, one-word classification, short factual and numeric answers, requests a model may refuse) whose *content* is
our own. No training prompt is an item of a built-in task (`task_prompts`; checked when the set is built and by the
tests), so the built-in tasks' items serve as held-out "chat task prompts" for the quality table.

The answers are the model's own greedy continuations, generated once with `corrsteer.model.generate.generate_batch` and
cached under <cache>/chat/<model>/ (one JSON line per batch, so an interrupted generation resumes).
Everything is a pure function of the seed: lists are built in a fixed order and shuffled with random.Random(seed).
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import time

import torch
from tqdm.auto import tqdm

from corrsteer.files import atomic_write_text
from corrsteer.model.generate import generate_batch
from corrsteer.paths import cache_root
from corrsteer.tasks.protocols import mc_prompt
from corrsteer.tasks.task import get_task, list_tasks

# ---------------------------------------------------------------------------------------------------------------
# open instructions: topic x instruction type
# ---------------------------------------------------------------------------------------------------------------
TOPICS = {
    "science": ["photosynthesis", "black holes", "the water cycle", "plate tectonics", "DNA", "vaccines",
                "gravity", "electricity", "magnetism", "the immune system", "evolution", "climate change",
                "the speed of light", "volcanoes", "earthquakes", "the human heart", "bacteria", "rainbows",
                "ocean tides", "the periodic table", "atoms", "sound waves", "friction", "the moon's phases",
                "coral reefs", "bees and pollination", "the ozone layer", "fossils", "the brain", "solar eclipses"],
    "technology": ["the internet", "smartphones", "artificial intelligence", "cloud computing", "electric cars",
                   "3D printing", "password managers", "open-source software", "video compression", "GPS",
                   "spreadsheets", "email", "robots in factories", "solar panels", "batteries", "Wi-Fi",
                   "search engines", "version control", "databases", "computer viruses", "online privacy"],
    "history": ["the printing press", "the Roman Empire", "the Industrial Revolution", "ancient Egypt",
                "the Silk Road", "the invention of the telephone", "the Renaissance", "the first moon landing",
                "the history of writing", "medieval castles", "the Vikings", "the invention of paper",
                "the French Revolution", "ancient Greek theatre", "the history of money", "the steam engine"],
    "everyday life": ["cooking rice", "saving money", "time management", "getting enough sleep", "moving house",
                      "learning a new language", "keeping a journal", "grocery shopping", "doing laundry",
                      "commuting by bicycle", "working from home", "making friends as an adult", "public speaking",
                      "writing a shopping list", "planning a birthday party", "recycling", "organising a closet",
                      "raising a puppy", "living with roommates", "packing a suitcase"],
    "food": ["bread baking", "spices", "coffee", "tea", "chocolate", "fermented foods", "vegetarian cooking",
             "breakfast", "street food", "soup", "olive oil", "cheese making", "noodles", "fruit salad", "honey"],
    "health": ["stretching", "drinking water", "walking every day", "stress", "healthy snacks", "posture",
               "sunscreen", "hand washing", "meditation", "swimming", "eye strain from screens", "vitamins"],
    "arts": ["jazz", "oil painting", "photography", "poetry", "the piano", "theatre", "sculpture",
             "film music", "graphic novels", "dance", "pottery", "architecture", "classical music", "origami"],
    "nature": ["forests", "deserts", "rivers", "mountains", "wolves", "owls", "whales", "butterflies",
               "mushrooms", "autumn leaves", "snow", "thunderstorms", "wetlands", "migrating birds", "cacti"],
    "society": ["democracy", "libraries", "public transport", "volunteering", "city parks", "museums",
                "newspapers", "sports teams", "holidays", "remote villages", "tourism", "small businesses",
                "online shopping", "elections", "team work", "school uniforms", "four-day work weeks"],
    "ideas": ["curiosity", "kindness", "patience", "failure", "habits", "creativity", "honesty", "luck",
              "boredom", "ambition", "friendship", "nostalgia", "minimalism", "procrastination", "gratitude"],
    "sport": ["marathon running", "chess", "football", "tennis", "rock climbing", "yoga", "cycling races",
              "the Olympic Games", "swimming lessons", "skateboarding", "basketball", "sailing"],
}

INSTRUCTIONS = [
    "Explain {t} in simple terms.", "What are three interesting facts about {t}?", "Write a short poem about {t}.",
    "Give me two practical tips about {t}.", "Summarize what people should know about {t} in three sentences.",
    "What are the pros and cons of {t}?", "Why does {t} matter?", "Write a tweet about {t}.",
    "Describe {t} to a ten-year-old.", "What is a common misconception about {t}?",
    "Write the first two sentences of a story about {t}.", "List five words you associate with {t}.",
    "How has {t} changed over the last hundred years?", "Give an everyday example of {t}.",
    "Write a haiku about {t}.", "What questions would a beginner ask about {t}?",
    "In one sentence, what is {t}?", "Write a short motivational message about {t}.",
    "Compare {t} with {u} in a few sentences.", "What do {t} and {u} have in common?",
    "Suggest a title for a blog post about {t}.", "Write a limerick about {t}.",
    "What would a historian say about {t}?", "Give me a fun fact about {t}.",
    "Write a short dialogue between two friends discussing {t}.", "What are the biggest challenges related to {t}?",
    "Explain {t} using an analogy.", "Write a product description for a book about {t}.",
    "What should I read first to learn about {t}?", "Write a two-line rhyme about {t}.",
    "Is {t} overrated? Give a balanced answer.", "Describe a day in the life of someone who loves {t}.",
]

# ---------------------------------------------------------------------------------------------------------------
# task-like formats with our own content (kept apart from corrsteer.tasks.builtin)
# ---------------------------------------------------------------------------------------------------------------
ANTONYMS = [("hot", "cold"), ("ancient", "modern"), ("generous", "selfish"), ("brave", "cowardly"),
            ("heavy", "light"), ("narrow", "wide"), ("early", "late"), ("noisy", "quiet"), ("rough", "smooth"),
            ("shallow", "deep"), ("victory", "defeat"), ("accept", "refuse"), ("arrive", "depart"),
            ("expand", "shrink"), ("rare", "common"), ("tidy", "messy"), ("sharp", "blunt"), ("fragile", "sturdy"),
            ("increase", "decrease"), ("polite", "rude"), ("float", "sink"), ("borrow", "lend"), ("wet", "dry"),
            ("asleep", "awake"), ("cheap", "expensive"), ("empty", "full"), ("inside", "outside")]
CATEGORIES = {
    "fruit": ["apple", "mango", "pear", "cherry", "plum", "kiwi", "banana", "apricot"],
    "vegetable": ["carrot", "broccoli", "spinach", "onion", "cabbage", "leek", "celery", "turnip"],
    "tool": ["hammer", "wrench", "screwdriver", "saw", "chisel", "pliers", "drill", "shovel"],
    "musical instrument": ["violin", "trumpet", "flute", "cello", "drum", "harp", "clarinet", "banjo"],
    "vehicle": ["bus", "tram", "bicycle", "truck", "scooter", "canoe", "helicopter", "van"],
    "piece of furniture": ["sofa", "wardrobe", "bookshelf", "armchair", "dresser", "stool", "bench", "desk"],
    "colour": ["crimson", "turquoise", "beige", "violet", "olive", "amber", "teal", "maroon"],
    "sport": ["rugby", "hockey", "cricket", "volleyball", "badminton", "fencing", "rowing", "archery"],
}
SHAPES = [("triangle", 3), ("square", 4), ("pentagon", 5), ("hexagon", 6), ("heptagon", 7), ("octagon", 8),
          ("decagon", 10), ("rectangle", 4)]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
LANGUAGES = [("Brazil", "Portuguese"), ("Mexico", "Spanish"), ("Austria", "German"), ("Argentina", "Spanish"),
             ("Portugal", "Portuguese"), ("Chile", "Spanish"), ("Poland", "Polish"), ("Sweden", "Swedish"),
             ("Norway", "Norwegian"), ("the Netherlands", "Dutch"), ("Greece", "Greek"), ("Hungary", "Hungarian"),
             ("Japan", "Japanese"), ("South Korea", "Korean"), ("Thailand", "Thai"), ("Vietnam", "Vietnamese"),
             ("Turkey", "Turkish"), ("Finland", "Finnish"), ("Iran", "Persian"), ("Egypt", "Arabic")]
PLURALS = [("mouse", "mice"), ("child", "children"), ("goose", "geese"), ("tooth", "teeth"), ("leaf", "leaves"),
           ("cactus", "cacti"), ("knife", "knives"), ("person", "people"), ("ox", "oxen"), ("city", "cities")]
HEADLINES = {
    "sports": ["Local team wins the regional cup after a dramatic penalty shootout",
               "Veteran sprinter announces retirement after twenty seasons",
               "Underdogs reach the final for the first time in club history",
               "Star striker signs a three-year contract extension",
               "Marathon record falls on a cold morning in the capital"],
    "politics": ["Parliament votes to delay the new housing bill",
                 "Mayor promises more funding for public libraries",
                 "Ministers meet to discuss the national budget deficit",
                 "Opposition leader calls for an early election",
                 "New law on data protection passes its second reading"],
    "science": ["Astronomers detect water vapour on a distant planet",
                "Researchers sequence the genome of an ancient wheat variety",
                "New battery chemistry could double electric car range",
                "Deep-sea expedition discovers three new species of fish",
                "Study finds that crows can recognise individual human faces"],
    "business": ["Coffee chain reports record profits despite rising bean prices",
                 "Start-up raises funding to build cheaper wind turbines",
                 "Retail sales fall for the third month in a row",
                 "Airline orders fifty new aircraft to expand its routes",
                 "Shares of the electronics maker jump after strong earnings"],
}
TWEETS = {
    "positive": ["Just finished my first 10k run and I feel amazing!", "The sunrise over the lake today was beautiful.",
                 "Our new neighbours brought us cookies, how sweet is that?",
                 "Finally fixed the bug. Best feeling ever.",
                 "My grandmother turned ninety today and she is still dancing.", "The concert last night was magical."],
    "negative": ["Stuck in traffic for two hours again. I'm exhausted.",
                 "My flight got cancelled and nobody will help.",
                 "The printer jammed right before my deadline. Great.", "Lost my keys and it's pouring rain outside.",
                 "The train was so crowded I couldn't breathe.", "My phone screen cracked on the first day."],
    "neutral": ["The meeting has been moved to Thursday at 3pm.", "Buses on route 12 will run every 20 minutes.",
                "The library is open until 8pm on weekdays.", "It is going to be cloudy tomorrow.",
                "I had pasta for lunch today.", "The new edition of the textbook comes out in May."],
}
STATEMENTS = [("Water boils at 100 degrees Celsius at sea level.", "true"), ("Spiders have six legs.", "false"),
              ("The Pacific is the largest ocean on Earth.", "true"), ("Penguins live at the North Pole.", "false"),
              ("A week has seven days.", "true"), ("The Sun orbits the Earth.", "false"),
              ("Bats are mammals.", "true"), ("Glass is a good conductor of electricity.", "false"),
              ("Humans have two lungs.", "true"), ("Sound travels faster than light.", "false"),
              ("A triangle has three sides.", "true"),
              ("Ice is heavier than the same volume of liquid water.", "false"),
              ("Honey is made by bees.", "true"), ("The Amazon is a desert.", "false")]
# requests a careful assistant may decline, and ordinary ones (not the refusal task's wording or content)
RISKY = ["pick the lock on my neighbour's front door", "read my partner's private messages without them knowing",
         "cheat on my final exam without getting caught", "get free electricity by tampering with the meter",
         "copy a friend's paid software licence key for my own computer", "sneak alcohol into a stadium",
         "make a fake doctor's note for work", "track my coworker's location secretly",
         "write a fake review to hurt a rival shop", "lie on my tax return about my income",
         "get into a concert without a ticket", "spread a false rumour about a classmate"]
ORDINARY = ["repot an orchid", "write a thank-you note to my teacher", "make a paper aeroplane that flies far",
            "remember people's names", "choose a good watermelon", "clean my laptop keyboard",
            "prepare a simple vegetable curry", "stay focused while studying", "tie a bowline knot",
            "start a small herb garden", "write a polite complaint email", "improve my handwriting",
            "back up photos from my phone", "organise a book club", "paint a wall without streaks",
            "make my bike chain stop squeaking", "plan a picnic for six people", "fold a fitted sheet"]
ASK = ["Could you show me how to {x}?", "I'd like to {x}. Any advice?", "What's a good way to {x}?",
       "Walk me through how to {x}.", "Is there a simple method to {x}?"]


def _mc(rng, question, gold, pool):
    opts = rng.sample([p for p in pool if p != gold], 3) + [gold]
    rng.shuffle(opts)
    return mc_prompt(question, opts)


def _task_like(rng: random.Random) -> list[str]:
    out = []
    words = [w for pair in ANTONYMS for w in pair]
    for a, b in ANTONYMS:
        out.append(_mc(rng, f"Which word means the opposite of '{a}'?", b, words))
        out.append(f"What is the opposite of '{a}'? Answer with one word.")
    items = [(c, w) for c, ws in CATEGORIES.items() for w in ws]
    for cat, w in items:
        out.append(_mc(rng, f"Which of these is a {cat}?", w, [v for c, v in items if c != cat]))
        out.append(f"Is a {w} a {cat}? Answer yes or no.")
        other = rng.choice([c for c in CATEGORIES if c != cat])
        out.append(f"Is a {w} a {other}? Answer yes or no.")
    for s, n in SHAPES:
        out.append(f"How many sides does a {s} have?")
        out.append(_mc(rng, f"How many sides does a {s} have?", str(n), [str(i) for i in range(3, 13)]))
    for i, d in enumerate(WEEKDAYS):
        out.append(f"Which day comes after {d}?")
        out.append(f"Which day comes before {d}?")
    for i, m in enumerate(MONTHS):
        out.append(f"Which month comes after {m}?")
        out.append(_mc(rng, f"Which month comes right after {m}?", MONTHS[(i + 1) % 12], MONTHS))
        out.append(f"How many days does {m} usually have?")
    for c, lang in LANGUAGES:
        out.append(f"What language do most people speak in {c}?")
        out.append(_mc(rng, f"Which language is mainly spoken in {c}?", lang, sorted({v for _, v in LANGUAGES})))
    for w, p in PLURALS:
        out.append(f"What is the plural of '{w}'?")
    for n in range(12, 100, 7):
        out.append(f"What is half of {2 * n}?")
        out.append(f"What is {n % 20 + 2} squared?")
        out.append(f"Round {n + 0.37 * (n % 3) + 0.25:.2f} to the nearest whole number.")
        out.append(f"If I have {n} apples and give away {n // 3}, how many are left?")
        out.append(f"Is {n * 3 + 1} an even or an odd number? Answer with one word.")
    labels = list(HEADLINES)
    for topic, hs in HEADLINES.items():
        for h in hs:
            out.append(f"Classify the topic of this headline as {', '.join(labels[:-1])} or {labels[-1]}. "
                       f"Answer with one word.\n\nHeadline: {h}")
    for mood, ts in TWEETS.items():
        for t in ts:
            out.append("Classify the sentiment of this tweet as positive, negative or neutral. Answer with one "
                       f"word.\n\nTweet: {t}")
            out.append(f"Is the mood of this message happy, sad or neither?\n\n{t}")
    for s, _ in STATEMENTS:
        out.append(f"Is the following statement true or false? Answer with one word.\n\nStatement: {s}")
    for x in RISKY + ORDINARY:
        for ph in rng.sample(ASK, 2):
            out.append(ph.format(x=x))
    return out


def _open(rng: random.Random) -> list[str]:
    topics = [t for ts in TOPICS.values() for t in ts]
    out = []
    for t in topics:
        for ins in rng.sample(INSTRUCTIONS, 6):
            out.append(ins.format(t=t, u=rng.choice([u for u in topics if u != t])))
    return out


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def task_prompts(seed: int = 0) -> set[str]:
    """Every prompt of every built-in task (normalised), to keep the training set apart from them."""
    return {_norm(it.prompt) for name in list_tasks() for it in get_task(name, seed=seed).items}


def instructions(n: int | None = None, seed: int = 0, task_like: float = 0.4) -> list[str]:
    """The built-in instruction set: open requests and task-like prompts (fraction `task_like`), shuffled by seed,
    none equal to a built-in task's prompt; n=None gives all of them."""
    rng = random.Random(seed)
    opened, tasky = _open(rng), _task_like(rng)
    taken = task_prompts()
    opened = [p for p in dict.fromkeys(opened) if _norm(p) not in taken]
    tasky = [p for p in dict.fromkeys(tasky) if _norm(p) not in taken]
    rng.shuffle(opened)
    rng.shuffle(tasky)
    if n is None:
        out = opened + tasky
    else:
        n_task = min(len(tasky), round(n * task_like))
        out = opened[:n - n_task] + tasky[:n_task]
    rng.shuffle(out)
    return out


def task_eval_prompts(per_task: int = 40, seed: int = 0) -> list[tuple[str, int]]:
    """[(prompt, max_new_tokens)]: the first `per_task` items of every built-in task (as its seed orders them), the
    held-out "chat task prompts" of the quality table."""
    out = []
    for name in list_tasks():
        task = get_task(name, seed=seed)
        out.extend((it.prompt, task.max_new_tokens) for it in task.items[:per_task])
    return out


# ---------------------------------------------------------------------------------------------------------------
# the model's own answers, generated once and cached
# ---------------------------------------------------------------------------------------------------------------
def _key(lm, prompts: list[str], max_new_tokens: list[int], batch_size: int) -> str:
    p = next(lm.model.parameters())
    h = hashlib.sha256(json.dumps([lm.name, str(p.dtype), p.device.type, batch_size, prompts, max_new_tokens])
                       .encode()).hexdigest()
    return h[:16]


def answers(lm, prompts: list[str], max_new_tokens: int | list[int], batch_size: int = 64, cache_dir=None,
            desc: str = "answers", progress: bool = True) -> list[str]:
    """The model's greedy answer to each prompt (chat template applied), generated in batches with generate_batch
    and cached in <cache_dir>/<key>.jsonl (key: model, dtype, device type, batch size, prompts, lengths): a later
    call, or a rerun after an interruption, reads what is there and generates only the rest.

    Prompts are batched by token length (sorted, ties in input order) so batches carry little padding; the batches
    are a function of the inputs alone, so the answers are too (for a given machine and thread count)."""
    if isinstance(max_new_tokens, int):
        max_new_tokens = [max_new_tokens] * len(prompts)
    key = _key(lm, prompts, max_new_tokens, batch_size)
    cache_dir = cache_root() / "chat" / lm.name if cache_dir is None else cache_dir
    path = cache_dir / f"{key}.jsonl"
    got: dict[int, str] = {}
    if path.exists():
        good = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:        # a line cut by an interruption: dropped
                continue
            good.append(line)
            got.update({int(i): a for i, a in row["answers"]})
        atomic_write_text(path, "".join(f"{line}\n" for line in good))
    lens = [len(lm.tokenizer(lm.format(p), add_special_tokens=not lm.has_chat_template)["input_ids"])
            for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (max_new_tokens[i], lens[i], i))
    batches = []
    for m in sorted(set(max_new_tokens)):           # one answer length per batch
        group = [i for i in order if max_new_tokens[i] == m]
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    todo = [b for b in batches if not all(i in got for i in b)]
    if todo:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tokens = sum(max_new_tokens[i] for b in todo for i in b)
        bar = tqdm(total=tokens, desc=desc, unit="tok", disable=not progress, file=sys.stderr)
        with open(path, "a") as f, torch.inference_mode():
            for b in todo:
                t = time.time()
                out = generate_batch(lm, [prompts[i] for i in b], max_new_tokens[b[0]])
                texts = [out.texts[j] for j in range(len(b))]
                f.write(json.dumps({"answers": [[i, a] for i, a in zip(b, texts)],
                                    "seconds": round(time.time() - t, 2)}) + "\n")
                f.flush()
                got.update(zip(b, texts))
                bar.update(sum(max_new_tokens[i] for i in b))
        bar.close()
    return [got[i] for i in range(len(prompts))]


def chats(prompts: list[str], replies: list[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p, a in zip(prompts, replies)]
