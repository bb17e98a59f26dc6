#!/usr/bin/env python3
"""Generates data/fleet.csv, the DEMONSTRATION fleet (invented APR names in real
comunas), whose totals reproduce the program's published figures:
56 APRs, 48 comunas, 4 regions, 21,092 beneficiaries, GORE contributions of
CLP 5,071,159,500 and public investment of CLP 52,740,058,800.
Deterministic: re-running gives the same file."""
import random, unicodedata, re

rng = random.Random(1964)  # the year the APR programme began
REGIONS = [
    ("biobio", "Biobío", 18, ["Los Ángeles", "Mulchén", "Nacimiento", "Negrete", "Quilaco", "Quilleco",
        "Santa Bárbara", "Tucapel", "Yumbel", "Cabrero", "Laja", "San Rosendo", "Alto Biobío", "Arauco", "Cañete"]),
    ("metropolitana", "Metropolitana de Santiago", 14, ["Melipilla", "Curacaví", "María Pinto", "San Pedro",
        "Alhué", "Tiltil", "Colina", "Lampa", "Pirque", "San José de Maipo", "Paine", "Isla de Maipo"]),
    ("maule", "Maule", 16, ["San Clemente", "Pencahue", "Río Claro", "Pelarco", "Curepto", "Empedrado",
        "Chanco", "Pelluhue", "Cauquenes", "Longaví", "Retiro", "Parral", "Colbún", "Yerbas Buenas"]),
    ("atacama", "Atacama", 8, ["Copiapó", "Tierra Amarilla", "Caldera", "Vallenar", "Alto del Carmen",
        "Freirina", "Huasco"]),
]
PLACES = ["Los Maitenes", "El Boldo", "Las Quilas", "El Peumo", "La Higuera", "Los Litres", "El Quillay",
    "Las Mercedes", "El Sauce", "Los Aromos", "La Vega", "El Molino", "Las Pataguas", "Los Queñes",
    "El Maqui", "La Estrella", "Los Robles", "El Retamo", "Las Rosas", "El Olivar", "Los Coigües",
    "Santa Elena", "San Vicente", "La Quebrada", "El Arrayán", "Los Canelos", "Piedra Blanca", "El Alamo",
    "Las Vertientes", "Los Guindos", "El Trébol", "La Palmilla", "Los Espinos", "El Romeral", "Las Lomas",
    "El Llano", "Los Corrales", "La Capilla", "El Manzano", "Las Toscas", "Los Cerrillos", "El Durazno",
    "La Posada", "Los Nogales", "El Carmen Bajo", "Las Cabras Altas", "El Culenar", "Los Lingues",
    "La Obra", "El Tranque", "Las Bandurrias", "El Ciruelo", "Los Perales", "La Puntilla", "El Pangue", "Las Juntas"]
SOURCES = ["pozo", "pozo", "pozo", "vertiente", "superficial"]
BENEFICIARIES, GORE, INVEST = 21092, 5_071_159_500, 52_740_058_800

def slug(s):
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")

def split(total, n, unit, lo, hi):
    """n random parts in [lo, hi) relative weights, multiples of unit, summing to total."""
    w = [rng.uniform(lo, hi) for _ in range(n)]
    parts = [int(total * x / sum(w) / unit) * unit for x in w]
    i = 0
    while sum(parts) < total:
        parts[i % n] += unit; i += 1
    assert sum(parts) == total
    return parts

rows = []
places = PLACES[:]
rng.shuffle(places)
for rid, rname, n, comunas in REGIONS:
    # every comuna gets one APR, the rest go to random comunas of the region
    cs = comunas + [rng.choice(comunas) for _ in range(n - len(comunas))]
    rng.shuffle(cs)
    for c in cs:
        rows.append([rid, rname, c, "APR " + places.pop()])
benef = split(BENEFICIARIES, len(rows), 1, 0.4, 2.2)
gore = split(GORE, len(rows), 500, 0.3, 2.0)
inv = split(INVEST, len(rows), 100, 0.3, 2.0)
seen = set()
out = ["# DEMONSTRATION DATA: invented APR names in real comunas; not real systems.",
       "# Totals reproduce the program's published figures (56 APRs, 48 comunas, 4 regions,",
       "# 21,092 beneficiaries, GORE CLP 5,071,159,500, public investment CLP 52,740,058,800).",
       "# Regenerate with tools/make_demo_fleet.py.",
       "id,name,comuna,region,region_name,beneficiaries,connections,source,capacity_l_s,storage_m3,gore_contribution_clp,public_investment_clp"]
for i, (rid, rname, comuna, name) in enumerate(rows):
    aid = slug(name.removeprefix("APR "))
    assert aid not in seen; seen.add(aid)
    b = benef[i]
    conn = max(10, round(b / 3.2))
    # max-day demand at 150 L/person/day and a 1.5 max-day factor, with margin 1.1-1.8
    cap = round(b * 150 / 86400 * 1.5 * rng.uniform(1.1, 1.8), 1)
    # storage: 20-35 % of a max day's volume
    store = int(round(b * 150 * 1.5 / 1000 * rng.uniform(0.2, 0.35) / 5) * 5) or 5
    out.append(",".join(str(x) for x in [aid, name, comuna, rid, rname, b, conn, rng.choice(SOURCES),
               cap, store, gore[i], inv[i]]))
open("data/fleet.csv", "w").write("\n".join(out) + "\n")
print(len(rows), "APRs", len({r[2] for r in rows}), "comunas")
