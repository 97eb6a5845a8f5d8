"""A story corpus from a small grammar the project writes itself: the training text for the project's own tiny model.

Every story has a hero (a child or an animal with a name), often a friend, a place, an object and one of a few plots
(sharing a found thing, a lost thing a friend gets back, rain, being brave, a present, getting lost), told in short
connected sentences. Everything is deterministic from a seed. All literal text lives in the tuples below, so
`vocabulary()` can list every word a story can contain (a few hundred), which the tests use to judge the model's output.

    python3 -m training.corpus --stories 5 --seed 1      # print a few stories
"""

import argparse
import random
import re

GIRL_NAMES = ("Lily", "Sue", "Mia", "Anna", "Lucy", "Emma", "Sara", "Zoe")
BOY_NAMES = ("Tom", "Ben", "Max", "Sam", "Tim", "Jack", "Leo", "Joe")
PEOPLE = ("girl", "boy")
ANIMALS = ("cat", "dog", "bunny", "bird", "bear", "fox", "frog", "duck", "mouse", "pig", "puppy", "kitten")
TRAITS = ("little", "happy", "kind", "small", "brave", "shy", "funny", "curious", "clever", "good")
PARENTS = ("mom", "dad")

HOMES = ("in a small house near the forest", "in a big house with a red door", "in a little town by the sea",
         "on a farm with many animals", "in a cozy house with a big garden", "near a big park",
         "in a little house on a hill")
ACTIVITIES = ("play outside", "run and jump", "sing songs", "read books", "draw pictures", "look at the stars",
              "dance in the sun", "climb trees", "play with {pos} toys", "help {pos} mom", "play with {pos} friends",
              "pick flowers")

PLACES = ("park", "forest", "garden", "beach", "lake", "farm", "hill", "river", "meadow", "woods")
WATER_PLACES = ("beach", "lake", "river")
OBJECTS = ("ball", "kite", "box", "hat", "book", "toy car", "doll", "flower", "shell", "stick", "apple", "cake",
           "balloon", "key", "rock", "leaf", "boat", "drum", "bell", "cup")
COLORS = ("red", "blue", "green", "yellow", "big", "shiny", "pretty", "small", "old", "new", "pink", "little")
SPOTS = ("under a tree", "in the grass", "behind a big rock", "on the ground", "next to a bush", "by the path")
WATER_SPOTS = ("near the water", "in the sand")
GAMES = ("played tag", "played catch with a ball", "ran in the grass", "looked for pretty rocks",
         "played hide and seek", "made a big sand castle", "jumped over little rocks", "picked red flowers")

OPENINGS = (  # (weight, sentence, says where the hero lives)
    (10, "Once upon a time, there was a {trait} {kind} named {name}.", False),
    (4, "Once upon a time, in a little town, there lived a {trait} {kind} named {name}.", True),
    (3, "There was once a {trait} {kind} named {name}.", False),
    (3, "Long ago, there lived a {trait} {kind} named {name}.", False),
    (3, "{name} was a {trait} {kind}.", False),
    (2, "One morning, a {trait} {kind} named {name} woke up early.", False),
    (2, "In a big green forest, there lived a {trait} {kind} named {name}.", True),
)
HOME_LINES = ("{P} lived {home}.", "{P} lived {home} with {pos} mom and dad.")
LIKE_LINES = ("{P} loved to {activity}.", "{P} liked to {activity} every day.", "Every day, {p} liked to {activity}.",
              "{name} loved to {activity} more than anything.")

# Plot 1: the hero finds something and learns to share it.
SHARE = (
    "One day, {name} went to the {place}.",
    "There, {p} saw a {color} {object} {spot}.",
    "{P} was very happy.",
    "{P} picked up the {object} and played with it.",
    "Then {p} saw {friend}, a {ftrait} {fkind}.",
    "{friend} looked sad.",
    "\"Why are you sad?\" asked {name}.",
    "\"I have no toys to play with,\" said {friend}.",
    "{name} wanted to keep the {object}, but {p} knew that sharing is good.",
    "{P} gave the {object} to {friend}.",
    "{friend} smiled and said, \"Thank you, {name}!\"",
)
SHARE_ENDS = ("They played with the {object} all day.", "They played together until the sun went down.",
              "{name} was happy that {p} shared.", "From that day on, {name} and {friend} were best friends.")

# Plot 2: the hero loses a thing and a friend gets it back (the trouble fits the place).
LOST_START = (
    "{name} had a {color} {object}.",
    "{P} loved it very much.",
    "One day, {p} took the {object} to the {place}.",
    "{P} played with it all morning.",
)
TROUBLES = (  # (trouble, how the friend helps, needs water)
    ("But then, the wind took the {object} up into a tall tree.",
     "{fname} climbed the tree and got the {object}.", False),
    ("But then, the {object} rolled under a big rock.", "{fname} pushed the rock and found the {object}.", False),
    ("But then, the wind took the {object} far away.", "{fname} ran very fast and caught the {object}.", False),
    ("But then, the {object} fell into the water.",
     "{fname} used a long stick to get the {object} out of the water.", True),
)
LOST_MIDDLE = (
    "{name} was very sad and began to cry.",
    "Just then, {friend} came by.",
    "{friend} was a {ftrait} {fkind}.",
    "\"Do not cry, I will help you,\" said {friend}.",
)
LOST_ENDS = (
    ("{name} was so happy.", "\"Thank you, {friend}!\" {p} said."),
    ("{name} gave {friend} a big hug.", "From that day on, they were best friends."),
    ("{name} smiled and said, \"You are a good friend.\"", "They went home together."),
)

# Plot 3: rain spoils a game and home is warm.
RAIN = (
    "One day, {name} and {friend} went to the {place} to play.",
    "The sun was shining and the sky was blue.",
    "They {game}.",
    "Suddenly, big dark clouds came and it began to rain.",
    "{name} and {friend} were wet and cold.",
    "\"Let's go home!\" said {name}.",
    "They ran home as fast as they could.",
    "{name}'s mom gave them warm milk and a soft towel.",
)
RAIN_ENDS = ("They were happy to be home.", "They watched the rain from the window.",
             "Soon the rain stopped and they went out to play again.")

# Plot 4: the hero is scared and a friend helps to be brave.
BRAVE_TASKS = (  # (what the hero wants, what the hero does, how it ends)
    ("climb the big hill", "{P} walked up the hill one step at a time.", "At the top, {p} could see the whole town."),
    ("swim in the lake", "{P} jumped into the water and began to swim.", "The water was cool and nice."),
    ("go into the dark woods", "{P} walked into the woods with {friend}.", "The woods were full of pretty birds."),
    ("ride a big bike", "{P} got on the bike and rode down the path.", "{P} went very fast and felt the wind."),
)
BRAVE = (
    "One day, {name} wanted to {task}, but {p} was scared.",
    "{friend}, a {ftrait} {fkind}, said, \"You can do it, {name}! I will be with you.\"",
    "{name} took a deep breath.",
)
BRAVE_ENDS = ("{name} was not scared anymore.", "{name} learned that it is good to be brave.",
              "{name} and {friend} laughed and had a lot of fun.")

# Plot 5: the hero makes a present for someone who is sad.
GIFTS = ("a card with a big red heart", "a little cake", "a pretty picture of the sun", "a hat made of leaves",
         "a necklace of shells")
GIFT = (
    "One day, {name} saw that {pos} {parent} was sad.",
    "{name} wanted to make {pos} {parent} happy.",
    "{P} made {gift}.",
    "It took a long time, but {p} did not stop.",
    "Then {p} gave it to {pos} {parent}.",
    "{pos_cap} {parent} smiled and gave {name} a big hug.",
    "\"Thank you, I love it,\" said {pos} {parent}.",
)
GIFT_ENDS = ("{name} felt warm and happy inside.", "{name} learned that giving makes people happy.")

# Plot 6: the hero gets lost and a wise animal shows the way home.
LOST_WAY = (
    "One day, {name} went for a walk in the woods.",
    "{P} saw a pretty butterfly and followed it.",
    "Soon, {p} did not know where {p} was.",
    "{name} was lost and scared.",
    "Then {p} met a wise old owl.",
    "\"Can you help me find my home?\" asked {name}.",
    "\"Yes, follow me,\" said the owl.",
    "The owl showed {name} the way home.",
    "{name} said thank you to the owl.",
    "{pos_cap} mom was very happy to see {obj}.",
)
LOST_WAY_ENDS = ("{name} did not walk into the woods alone again.", "That night, {name} went to bed with a big smile.")

PRONOUNS = {"girl": {"p": "she", "P": "She", "obj": "her", "pos": "her", "pos_cap": "Her"},
            "boy": {"p": "he", "P": "He", "obj": "him", "pos": "his", "pos_cap": "His"}}

PLOTS = ("share", "lost", "rain", "brave", "gift", "lost_way")


def _character(rng, avoid=()):
    gender = rng.choice(("girl", "boy"))
    name = rng.choice([n for n in (GIRL_NAMES if gender == "girl" else BOY_NAMES) if n not in avoid])
    kind = gender if rng.random() < 0.55 else rng.choice(ANIMALS)
    return gender, name, kind


def _article(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _some(rng, endings):
    """One or two of the endings, in the order they are listed."""
    chosen = sorted(rng.sample(range(len(endings)), rng.randint(1, 2)))
    return [endings[index] for index in chosen]


def story(rng):
    """One story as a single line of text."""
    gender, name, kind = _character(rng)
    fgender, friend, fkind = _character(rng, avoid=(name,))
    slots = dict(PRONOUNS[gender], name=name, kind=kind, trait=rng.choice(TRAITS), friend=friend, fname=friend,
                 fkind=fkind, ftrait=rng.choice(TRAITS), place=rng.choice(PLACES), object=rng.choice(OBJECTS),
                 color=rng.choice(COLORS), spot=rng.choice(SPOTS), game=rng.choice(GAMES),
                 home=rng.choice(HOMES), parent=rng.choice(PARENTS), gift=rng.choice(GIFTS))
    slots["activity"] = rng.choice(ACTIVITIES).format(**slots)
    if slots["place"] in WATER_PLACES:
        slots["spot"] = rng.choice(SPOTS + WATER_SPOTS)
    _, opening, placed = rng.choices(OPENINGS, weights=[entry[0] for entry in OPENINGS])[0]
    lines = [opening]
    if not placed and rng.random() < 0.7:
        lines.append(rng.choice(HOME_LINES))
    if rng.random() < 0.7:
        lines.append(rng.choice(LIKE_LINES))
    plot = rng.choice(PLOTS)
    if plot == "share":
        lines += SHARE
        lines += _some(rng, SHARE_ENDS)
    elif plot == "lost":
        water = slots["place"] in WATER_PLACES
        trouble, help_line, _ = rng.choice([t for t in TROUBLES if t[2] == water or not t[2]])
        lines += LOST_START + (trouble,) + LOST_MIDDLE + (help_line,) + rng.choice(LOST_ENDS)
    elif plot == "rain":
        lines += RAIN
        lines += _some(rng, RAIN_ENDS)
    elif plot == "brave":
        task, act, result = rng.choice(BRAVE_TASKS)
        slots["task"] = task
        lines += BRAVE + (act, result)
        lines += _some(rng, BRAVE_ENDS)
    elif plot == "gift":
        lines += GIFT
        lines.append(rng.choice(GIFT_ENDS))
    else:
        lines += LOST_WAY
        lines.append(rng.choice(LOST_WAY_ENDS))
    text = " ".join(line.format(**slots) for line in lines)
    # "a" before a vowel becomes "an" (an apple, an old hat).
    return re.sub(r"\ba ([aeiou])", r"an \1", text)


def generate_stories(count, seed=0):
    rng = random.Random(seed)
    return [story(rng) for _ in range(count)]


def _all_text():
    """Every literal string the grammar can emit, with placeholders removed."""
    found = []

    def walk(value):
        if isinstance(value, str):
            found.append(re.sub(r"\{[A-Za-z_]+\}", " ", value))
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for value in (GIRL_NAMES, BOY_NAMES, PEOPLE, ANIMALS, TRAITS, PARENTS, HOMES, ACTIVITIES, PLACES, OBJECTS,
                  COLORS, SPOTS, WATER_SPOTS, GAMES, OPENINGS, HOME_LINES, LIKE_LINES, SHARE, SHARE_ENDS, LOST_START,
                  TROUBLES, LOST_MIDDLE, LOST_ENDS, RAIN, RAIN_ENDS, BRAVE_TASKS, BRAVE, BRAVE_ENDS, GIFTS, GIFT,
                  GIFT_ENDS, LOST_WAY, LOST_WAY_ENDS, PRONOUNS):
        walk(value)
    found.append("an")
    return " ".join(found)


def words(text):
    """The words of a text, lower-cased (apostrophes split: "Lily's" is "lily" and "s")."""
    return re.findall(r"[a-z]+", text.lower())


def vocabulary():
    """Every word a story can contain, lower-cased."""
    return set(words(_all_text()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for text in generate_stories(args.stories, args.seed):
        print(text + "\n")
    print(f"vocabulary: {len(vocabulary())} words")


if __name__ == "__main__":
    main()
