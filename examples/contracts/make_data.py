"""Write the bundled contract-clause task set (lease / nda / employment) and the general-text file.

Deterministic: `python examples/contracts/make_data.py` regenerates the shipped JSONL files byte for byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20240611
OUT_DIR = Path(__file__).resolve().parent
SPLIT_SIZES = {"train": 70, "validation": 12, "heldout": 18}  # rows per label

# fmt: off
COMPANIES = [
    "Acme Holdings Ltd", "Birchwood Analytics LLC", "Cobalt Freight Inc", "Delta Harbour Foods",
    "Evergreen Media plc", "Foxglove Robotics GmbH", "Granite Peak Partners", "Heron Software Ltd",
    "Ironbridge Logistics", "Juniper Health Group", "Kestrel Energy SA", "Lumen Textiles Co",
    "Maple & Finch LLP", "Northwind Traders", "Orchid Biotech Inc", "Pinecrest Hotels",
]
PEOPLE = [
    "Maria Lopez", "James O'Neill", "Aisha Rahman", "Tomasz Nowak", "Chen Wei", "Fatima Haddad",
    "Lukas Schmidt", "Priya Nair", "Oliver Brown", "Sofia Rossi", "Kwame Mensah", "Hannah Cohen",
    "Diego Fernandez", "Yuki Tanaka", "Emma Dubois", "Samuel Okafor",
]
PLACES = [
    "London", "Manchester", "Dublin", "Berlin", "Lyon", "Austin", "Toronto", "Leeds", "Rotterdam",
    "Glasgow", "Denver", "Milan", "Cardiff", "Oslo", "Seattle", "Bristol",
]
STREETS = ["High Street", "Mill Lane", "Station Road", "Church Street", "Harbour Way", "Elm Avenue"]
PROPERTY = ["Unit", "Flat", "Suite", "Apartment", "Warehouse", "Office"]
ROLES = [
    "Senior Data Analyst", "Warehouse Supervisor", "Software Engineer", "Marketing Manager",
    "Staff Accountant", "Head Chef", "Sales Representative", "Laboratory Technician",
]
CURRENCY = ["GBP", "EUR", "USD"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
]
INFO = [
    "customer lists", "source code", "pricing models", "product roadmaps", "supplier terms",
    "manufacturing processes", "financial forecasts", "clinical trial data",
]
PURPOSES = [
    "a possible acquisition", "a joint venture", "a software licence", "a supply arrangement",
    "a research collaboration", "a distribution partnership",
]
# fmt: on


def _fill(rng: random.Random) -> dict[str, str]:
    """Draw one set of slot values shared by every template."""
    first, second = rng.sample(COMPANIES, 2)
    return {
        "company": first,
        "other": second,
        "person": rng.choice(PEOPLE),
        "place": rng.choice(PLACES),
        "unit": f"{rng.choice(PROPERTY)} {rng.randint(1, 48)}, {rng.randint(2, 240)} {rng.choice(STREETS)}",
        "rent": f"{rng.choice(CURRENCY)} {rng.randrange(650, 9800, 25):,}",
        "deposit_weeks": str(rng.choice([4, 5, 6, 8])),
        "months": str(rng.choice([6, 12, 18, 24, 36, 60])),
        "years": str(rng.choice([2, 3, 5, 7, 10])),
        "day": str(rng.randint(1, 28)),
        "month": rng.choice(MONTHS),
        "notice": str(rng.choice([7, 14, 30, 60, 90])),
        "info": rng.choice(INFO),
        "purpose": rng.choice(PURPOSES),
        "role": rng.choice(ROLES),
        "salary": f"{rng.choice(CURRENCY)} {rng.randrange(24000, 140000, 500):,}",
        "hours": str(rng.choice([20, 30, 35, 37.5, 40])),
        "leave": str(rng.choice([20, 25, 28, 30])),
    }


TEMPLATES: dict[str, list[str]] = {
    "lease": [
        "The Landlord, {company}, lets {unit}, {place} to {person} for a term of {months} months.",
        "The Tenant shall pay rent of {rent} per month in advance on day {day} of each month.",
        "A deposit equal to {deposit_weeks} weeks' rent is payable by {person} before the keys to {unit} "
        "are released.",
        "The Tenant must keep the premises at {unit} in good repair and may not sublet without the "
        "Landlord's written consent.",
        "{company} may inspect the property on giving {notice} days' notice to the occupier.",
        "Either party may end this tenancy after {months} months by giving {notice} days' written notice; "
        "rent is reviewed each {month}.",
        "The premises in {place} shall be used only as a private residence and no business may be "
        "carried on there.",
        "Service charges and utilities for {unit} are payable by the Tenant in addition to the rent of "
        "{rent}.",
    ],
    "nda": [
        "{company} and {other} wish to exchange Confidential Information in connection with {purpose}.",
        "The Recipient shall not disclose any Confidential Information, including {info}, to any third "
        "party without prior written consent.",
        "Confidential Information received from {company} shall be used solely for evaluating {purpose}.",
        "The obligations of confidentiality survive for {years} years after the date of disclosure.",
        "On request, {other} shall return or destroy all documents containing {info} within {notice} days.",
        "Information that is already public or independently developed by {other} is not Confidential "
        "Information.",
        "{person} may share the {info} only with employees who need to know it and are bound by "
        "equivalent secrecy duties.",
        "Any breach of this non-disclosure undertaking may cause irreparable harm, and {company} may seek "
        "an injunction in the courts of {place}.",
    ],
    "employment": [
        "{company} employs {person} as {role}, starting on {day} {month}, at its offices in {place}.",
        "The Employee shall receive a gross annual salary of {salary}, paid monthly in arrears.",
        "Normal working hours are {hours} hours per week, Monday to Friday, with one hour for lunch.",
        "{person} is entitled to {leave} days of paid holiday each year in addition to public holidays.",
        "The first {months} months of employment are a probationary period during which either party "
        "may terminate on {notice} days' notice.",
        "After probation, {company} or the Employee may end the employment by giving {notice} days' "
        "written notice.",
        "The Employee reports to the Head of Operations and shall perform the duties of {role} faithfully.",
        "{person} shall not work for a competing business in {place} during employment with {company}.",
    ],
}

GENERAL = [
    "The morning train was late again, so most passengers waited on the cold platform with coffee.",
    "Bees visit thousands of flowers each day and carry pollen from one plant to the next.",
    "A good soup starts with onions cooked slowly in butter until they are soft and sweet.",
    "The library opens at nine and closes at six, except on Sundays when it is shut all day.",
    "Rain fell steadily through the night, and by dawn the river had risen above its banks.",
    "She learned to play the piano as a child and still practises scales every evening.",
    "Most maps show north at the top, but early sailors often drew them the other way round.",
    "The museum has a small collection of clocks, some of them more than three hundred years old.",
    "Children in the village walk to school along a path that follows the old canal.",
    "Fresh bread tastes best on the day it is baked, although it makes excellent toast later.",
    "The committee met on Tuesday to discuss the budget for next year's summer festival.",
    "Light travels faster than sound, which is why we see lightning before we hear thunder.",
    "He repaired the bicycle himself, replacing the chain and adjusting both brakes.",
    "The garden was full of tomatoes, beans and courgettes by the end of August.",
    "Many birds fly south for the winter and return in spring to build their nests.",
    "Our neighbours painted their front door bright yellow, and now everyone can find the house.",
    "The recipe calls for two cups of flour, one egg, a pinch of salt and a little milk.",
    "Water boils at a lower temperature high in the mountains because the air pressure is lower.",
    "The film was long, but the final scene made the whole evening worthwhile.",
    "A small boat drifted across the bay while gulls circled above the harbour wall.",
    "Reading aloud to young children helps them learn new words and enjoy stories.",
    "The old bridge was closed for repairs, so traffic was sent through the town centre.",
    "Every autumn the leaves on the maple tree turn red before they fall.",
    "The shop sells second-hand books, old records and postcards from around the world.",
    "Walking for half an hour a day is a simple way to stay healthy.",
    "The teacher asked the class to write a short poem about the sea.",
    "Snow covered the hills overnight, and the roads were quiet until noon.",
    "The football match ended in a draw after a late goal from the visiting team.",
    "Farmers in the valley grow wheat, barley and potatoes on the flat land near the river.",
    "She keeps a notebook in her bag to write down ideas whenever they come to her.",
    "The moon takes about twenty-seven days to travel once around the Earth.",
    "After dinner we played cards by the fire and listened to the wind outside.",
    "A kettle, two mugs and a jar of tea were all that stood on the kitchen shelf.",
    "The new park has a playground, a pond with ducks and plenty of benches in the shade.",
    "Volunteers cleaned the beach on Saturday and collected forty bags of rubbish.",
    "The bakery on the corner opens early, and the smell of bread fills the whole street.",
    "Learning a second language takes patience, practice and a willingness to make mistakes.",
    "The storm knocked down several trees, and power was lost in the north of the town.",
    "Cats sleep for much of the day and are most active at dawn and dusk.",
    "The hotel stands on a hill with a clear view of the lake and the mountains beyond.",
    "Grandfather told stories about the war, the farm and the winter the lake froze solid.",
    "The bus driver waited while an old man climbed slowly up the steps.",
    "Good shoes matter on a long hike, especially when the path is rocky and wet.",
    "The orchestra tuned their instruments as the audience found their seats.",
    "Apples, pears and plums grow well in the mild, damp climate of the west.",
    "The children built a sandcastle and watched the tide wash it away.",
    "A map, a torch and a bottle of water are useful things to carry on any walk.",
    "The town market sells fruit, cheese, flowers and fresh fish every Friday.",
    "The scientist repeated the experiment three times to be sure of the result.",
    "Owls hunt at night, using their sharp hearing to find mice in the dark fields.",
    "The festival ended with fireworks over the river and music until midnight.",
    "He forgot his umbrella on the train and arrived at the office soaking wet.",
    "A quiet room, a comfortable chair and a good lamp make reading a pleasure.",
    "The price of coffee has risen this year after a poor harvest in several countries.",
    "The lighthouse has guided ships safely past the rocks for more than a century.",
    "My sister collects stamps and has albums filled with birds, ships and famous faces.",
    "Spring arrived early, and the cherry trees along the avenue were in full bloom by March.",
    "The chef tasted the sauce, added a little lemon and sent the plates out to the tables.",
    "Clouds gathered over the hills in the afternoon, and everyone hurried home before the rain.",
    "The village hall hosts a dance on the first Saturday of every month.",
]


def _rows(rng: random.Random, label: str, count: int, seen: set[str]) -> list[dict[str, str]]:
    """Draw `count` new clauses for `label` whose text has not been drawn before (keeps splits disjoint)."""
    rows: list[dict[str, str]] = []
    while len(rows) < count:
        text = rng.choice(TEMPLATES[label]).format(**_fill(rng))
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    """Generate train, validation and heldout clause splits plus general.jsonl into this folder."""
    rng = random.Random(SEED)
    seen: set[str] = set()
    for split, per_label in SPLIT_SIZES.items():
        rows = [row for label in TEMPLATES for row in _rows(rng, label, per_label, seen)]
        rng.shuffle(rows)
        _write(OUT_DIR / f"{split}.jsonl", [{"id": f"{split}-{i:03d}", **row} for i, row in enumerate(rows)])
    general: list[dict[str, str]] = [{"id": f"general-{i:03d}", "text": t} for i, t in enumerate(GENERAL)]
    _write(OUT_DIR / "general.jsonl", general)


if __name__ == "__main__":
    main()
