"""Deterministic, realistic Clover item catalogs for gas stations and convenience stores.

The items are shaped exactly like Clover's item JSON so the sync meets the awkward cases of a
real store: per-gallon fuel, hidden age-restricted tobacco and alcohol, variable-priced lottery
and deli, variant groups created in one millisecond, hidden items without a SKU.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# 2024-01-01T00:00:00Z: a fixed start keeps the output a function of the seed alone.
DEFAULT_START_MS = 1_704_067_200_000

_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class _Product:
    """A product before it becomes an item: what a store owner would type into Clover."""

    name: str
    price: int
    category: str
    price_type: str = "FIXED"
    unit_name: str | None = None
    revenue: bool = True


_AGE_RESTRICTED = frozenset({"tobacco", "alcohol"})
# Share of each category's items that the register hides (age-restricted goods are rung up
# through a prompt instead of a button, so stores hide most of them).
_HIDDEN_SHARE = {"tobacco": 0.85, "alcohol": 0.6}
_SKU_PREFIX = {
    "fuel": "FUEL",
    "tobacco": "TOB",
    "alcohol": "ALC",
    "drinks": "BEV",
    "snacks": "SNK",
    "grocery": "GRO",
    "automotive": "AUTO",
    "foodservice": "FS",
    "lottery": "LOT",
}
# Category weights of the filler after the fixed core of the catalog.
_WEIGHTS = {
    "tobacco": 18,
    "alcohol": 10,
    "drinks": 24,
    "snacks": 24,
    "grocery": 12,
    "automotive": 1,
    "foodservice": 2,
}

# Fuel grades and their markup in cents per gallon over regular.
_FUEL = (
    ("Regular Unleaded 87", 0),
    ("Plus Unleaded 89", 40),
    ("Premium Unleaded 93", 80),
    ("Diesel #2", 50),
)

_CIGARETTE_BRANDS = (
    "Marlboro",
    "Newport",
    "Camel",
    "Pall Mall",
    "Winston",
    "American Spirit",
    "Parliament",
    "L&M",
    "Kool",
    "Maverick",
)
_CIGARETTE_STYLES = ("Red", "Gold", "Silver", "Menthol", "Menthol Gold", "Blue", "Non-Filter")
_CIGARETTE_PACKS = (
    ("King Box", 999),
    ("100s Box", 1029),
    ("King Soft Pack", 979),
    ("King Carton", 8999),
)
_OTHER_TOBACCO = (
    ("Grizzly Wintergreen Long Cut", 649),
    ("Copenhagen Original Fine Cut", 799),
    ("Swisher Sweets Cigarillos 2pk", 149),
    ("Black & Mild Original Tip", 129),
    ("JUUL Pods Virginia Tobacco 4pk", 2499),
    ("ZYN Cool Mint 6mg", 599),
    ("Backwoods Honey Bourbon 5pk", 1099),
)
_BEERS = (
    "Bud Light",
    "Budweiser",
    "Coors Light",
    "Miller Lite",
    "Michelob Ultra",
    "Modelo Especial",
    "Corona Extra",
    "Natural Light",
    "Busch Light",
    "White Claw Black Cherry",
    "Twisted Tea Original",
    "Truly Wild Berry",
)
_BEER_PACKS = (
    ("24oz Can", 299),
    ("6pk 12oz Can", 1099),
    ("12pk 12oz Can", 1799),
    ("18pk 12oz Can", 2299),
    ("30pk 12oz Can", 2899),
)
_SODA = (("12oz Can", 149), ("20oz", 229), ("1L", 279), ("2L", 349))
_ENERGY = (("8.4oz", 299), ("12oz", 349), ("16oz", 379))
_SPORTS = (("20oz", 229), ("28oz", 279))
_WATER = (("16.9oz", 129), ("20oz", 179), ("1L", 229))
_DRINKS = (
    ("Coca-Cola", _SODA),
    ("Diet Coke", _SODA),
    ("Coke Zero Sugar", _SODA),
    ("Sprite", _SODA),
    ("Dr Pepper", _SODA),
    ("Pepsi", _SODA),
    ("Mountain Dew", _SODA),
    ("Red Bull", _ENERGY),
    ("Red Bull Sugarfree", _ENERGY),
    ("Monster Energy", (("16oz", 329),)),
    ("Monster Zero Ultra", (("16oz", 329),)),
    ("Celsius Sparkling Orange", (("12oz", 279),)),
    ("Gatorade Cool Blue", _SPORTS),
    ("Gatorade Fruit Punch", _SPORTS),
    ("BodyArmor Strawberry Banana", (("16oz", 249),)),
    ("Dasani Water", _WATER),
    ("Smartwater", _WATER),
    ("AriZona Green Tea", (("23oz Can", 129),)),
    ("Pure Leaf Sweet Tea", (("18.5oz", 229),)),
    ("Starbucks Frappuccino Mocha", (("13.7oz", 379),)),
)
_CHIPS = (("1oz", 129), ("2.625oz", 229), ("9.25oz Party Size", 549))
_CANDY = (("1.86oz", 199), ("King Size", 289), ("Share Size", 329))
_SNACKS = (
    ("Doritos Nacho Cheese", _CHIPS),
    ("Doritos Cool Ranch", _CHIPS),
    ("Lay's Classic", _CHIPS),
    ("Cheetos Flamin' Hot", _CHIPS),
    ("Takis Fuego", (("4oz", 249), ("9.9oz", 499))),
    ("Funyuns Onion Rings", (("1.25oz", 129),)),
    ("Pringles Original", (("5.2oz", 279),)),
    ("Snickers", _CANDY),
    ("Reese's Peanut Butter Cups", _CANDY),
    ("M&M's Peanut", _CANDY),
    ("Twix", _CANDY),
    ("Kit Kat", _CANDY),
    ("Skittles Original", _CANDY),
    ("Slim Jim Original", (("0.97oz", 179), ("Giant 0.97oz 2pk", 299))),
    ("Jack Link's Beef Jerky Original", (("1.25oz", 399), ("2.85oz", 699))),
    ("Planters Salted Peanuts", (("1.75oz", 149),)),
    ("David Original Sunflower Seeds", (("5.25oz", 249),)),
    ("Hostess Honey Bun", (("4.75oz", 199),)),
    ("Little Debbie Oatmeal Creme Pie", (("2.67oz", 99),)),
    ("Trident Spearmint Gum", (("14ct", 179),)),
)
_GROCERY = (
    ("Wonder Classic White Bread 20oz", 399),
    ("Whole Milk 1gal", 479),
    ("Land O Lakes Salted Butter 1lb", 599),
    ("Large Eggs Dozen", 449),
    ("Kraft Mac & Cheese 7.25oz", 229),
    ("Campbell's Chicken Noodle Soup 10.75oz", 249),
    ("Maruchan Ramen Chicken 3oz", 79),
    ("Jif Creamy Peanut Butter 16oz", 449),
    ("Charmin Ultra Soft 4 Roll", 799),
    ("Bounty Paper Towels 1 Roll", 299),
    ("Advil Tablets 24ct", 899),
    ("Tylenol Extra Strength 24ct", 899),
    ("Tums Ultra Strength 12ct", 299),
    ("Duracell AA 4pk", 799),
    ("BIC Classic Lighter", 249),
    ("Kingsford Charcoal 8lb", 1199),
    ("Ice Bag 7lb", 349),
)
_AUTOMOTIVE = (
    ("Pennzoil 5W-30 Motor Oil 1qt", 899),
    ("Prestone Antifreeze 1gal", 1799),
    ("Rain-X Washer Fluid 1gal", 499),
    ("STP Fuel Injector Cleaner 12oz", 699),
    ("Armor All Protectant Wipes 30ct", 799),
)
# Variant groups: Clover makes each variant its own item named from group and option names.
_VARIANT_GROUPS = (
    ("Fountain Drink", (("Small 20oz", 149), ("Medium 32oz", 189), ("Large 44oz", 229))),
    ("Hot Dog", (("Regular", 199), ("Jumbo", 299))),
    ("Roller Grill Taquito", (("Chicken", 179), ("Beef", 179), ("Cheese", 179))),
    ("Frozen Drink", (("12oz", 149), ("20oz", 199), ("32oz", 249))),
    ("Cappuccino", (("Small", 149), ("Medium", 179), ("Large", 209))),
    ("Donut", (("Glazed", 129), ("Chocolate Frosted", 149), ("Sprinkled", 149))),
)


def _variants(group: str, options: tuple[tuple[str, int], ...]) -> list[_Product]:
    """The items of one variant group, which Clover creates together."""
    return [_Product(f"{group} {option}", price, "foodservice") for option, price in options]


def _singles(category: str, named: Iterable[tuple[str, int]]) -> list[list[_Product]]:
    return [[_Product(name, price, category)] for name, price in named]


# Every filler batch by category, in a fixed order that the seeded shuffle permutes.
_POOLS: dict[str, list[list[_Product]]] = {
    "tobacco": _singles(
        "tobacco",
        [
            (f"{brand} {style} {pack}", price)
            for brand in _CIGARETTE_BRANDS
            for style in _CIGARETTE_STYLES
            for pack, price in _CIGARETTE_PACKS
        ]
        + list(_OTHER_TOBACCO),
    ),
    "alcohol": _singles(
        "alcohol", [(f"{beer} {pack}", price) for beer in _BEERS for pack, price in _BEER_PACKS]
    ),
    "drinks": _singles(
        "drinks", [(f"{brand} {size}", price) for brand, sizes in _DRINKS for size, price in sizes]
    ),
    "snacks": _singles(
        "snacks", [(f"{brand} {size}", price) for brand, sizes in _SNACKS for size, price in sizes]
    ),
    "grocery": _singles("grocery", _GROCERY),
    "automotive": _singles("automotive", _AUTOMOTIVE),
    "foodservice": [_variants(group, options) for group, options in _VARIANT_GROUPS],
}


def _item(
    product: _Product, rng: random.Random, ids: set[str], codes: set[str], *, serial: int
) -> dict[str, Any]:
    hidden = rng.random() < _HIDDEN_SHARE.get(product.category, 0.03)
    price = product.price
    if product.price_type == "FIXED":
        price += rng.choice((0, 0, 10, 20, 50))
    item: dict[str, Any] = {
        "id": _unique_id(rng, ids),
        "name": product.name,
        "code": _upc(rng, codes),
        "price": price,
        "priceType": product.price_type,
        "cost": round(price * rng.uniform(0.55, 0.85)),
        "hidden": hidden,
        "available": product.category == "fuel" or rng.random() >= 0.03,
        "isRevenue": product.revenue,
        "isAgeRestricted": product.category in _AGE_RESTRICTED,
    }
    # Stores rarely bother to give a SKU to what the register never shows.
    if not hidden or rng.random() >= 0.3:
        item["sku"] = f"{_SKU_PREFIX[product.category]}-{serial:05d}"
    if product.unit_name is not None:
        item["unitName"] = product.unit_name
    return item


def _core(rng: random.Random, *, fuel: bool) -> list[list[_Product]]:
    """What every such store sells, first, so even a tiny catalog has the awkward cases."""
    regular = 339 + rng.choice((-20, -10, 0, 10, 20))
    pumps = [
        [_Product(name, regular + markup, "fuel", "PER_UNIT", "gal")]
        for name, markup in (_FUEL if fuel else ())
    ]
    return [
        *pumps[:1],
        [_Product("Marlboro Red King Box", 1049, "tobacco")],
        [_Product("Bud Light 12pk 12oz Can", 1799, "alcohol")],
        *pumps[1:],
        _variants("Coffee", (("Small", 149), ("Medium", 179), ("Large", 199))),
        [_Product("Lottery Scratch Ticket", 0, "lottery", "VARIABLE", revenue=False)],
        [_Product("Deli Sandwich Made to Order", 0, "foodservice", "VARIABLE")],
        [_Product("Deli Sliced Turkey", 899, "foodservice", "PER_UNIT", "lb")],
    ]


def _batches(n_items: int, rng: random.Random, *, fuel: bool) -> list[list[_Product]]:
    """The core, then filler drawn by category weight, as the batches Clover creates in one call.

    A category's names repeat only once all of them were drawn, which keeps the mix of a large
    catalog true to the weights.
    """
    batches = _core(rng, fuel=fuel)
    count = sum(len(batch) for batch in batches)
    pools: dict[str, list[list[_Product]]] = {}
    categories = list(_WEIGHTS)
    weights = list(_WEIGHTS.values())
    while count < n_items:
        category = rng.choices(categories, weights)[0]
        if not pools.get(category):
            pools[category] = rng.sample(_POOLS[category], k=len(_POOLS[category]))
        batches.append(pools[category].pop())
        count += len(batches[-1])
    return batches


def _unique_id(rng: random.Random, taken: set[str]) -> str:
    while True:
        candidate = "".join(rng.choices(_ID_ALPHABET, k=13))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def _upc(rng: random.Random, taken: set[str]) -> str:
    """A 12-digit UPC-A with a valid check digit, so barcode validation passes."""
    while True:
        body = "".join(rng.choices(string.digits, k=11))
        odd = sum(int(d) for d in body[0::2])
        even = sum(int(d) for d in body[1::2])
        code = body + str((10 - (odd * 3 + even) % 10) % 10)
        if code not in taken:
            taken.add(code)
            return code


def _catalog(n_items: int, seed: int, start_ms: int | None, *, fuel: bool) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ids: set[str] = set()
    codes: set[str] = set()
    created = DEFAULT_START_MS if start_ms is None else start_ms
    items: list[dict[str, Any]] = []
    for batch in _batches(n_items, rng, fuel=fuel):
        # One batch is one Clover call, so its items share their millisecond; batches are
        # spaced 1 s to 2 min apart and edited within a second of creation.
        created += rng.randint(1_000, 120_000)
        modified = created + rng.randint(0, 999)
        group_id = _unique_id(rng, ids) if len(batch) > 1 else None
        for product in batch:
            items.append(_item(product, rng, ids, codes, serial=len(items) + 1))
            items[-1].update(createdTime=created, modifiedTime=modified)
            if group_id is not None:
                items[-1]["itemGroup"] = {"id": group_id}
    return items[:n_items]


def gas_station_catalog(
    n_items: int, *, seed: int = 0, start_ms: int | None = None
) -> list[dict[str, Any]]:
    """``n_items`` Clover items of a gas station, the same for the same seed.

    Times start at ``start_ms`` (default: 2024-01-01) and rise 1 s to 2 min per batch, so a
    catalog of n items spans at most 2 min per item.
    """
    return _catalog(n_items, seed, start_ms, fuel=True)


def convenience_store_catalog(
    n_items: int, *, seed: int = 0, start_ms: int | None = None
) -> list[dict[str, Any]]:
    """Like :func:`gas_station_catalog`, for a store without fuel pumps."""
    return _catalog(n_items, seed, start_ms, fuel=False)


def numbered_catalog(n_items: int) -> list[dict[str, Any]]:
    """``n_items`` plain items for tests that need labels, not a store: ``Item i`` at
    $1.00 + i cents, ``FIXED``, SKU ``SKU0000`` … (the simulator gives ids and times)."""
    return [
        {"name": f"Item {i}", "price": 100 + i, "priceType": "FIXED", "sku": f"SKU{i:04d}"}
        for i in range(n_items)
    ]
