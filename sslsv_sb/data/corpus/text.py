"""Random sentences for the synthetic speakers (English templates, word lists)."""

_EN_DET = "the a this that every one some my your our their".split()
_EN_ADJ = (
    "small large quiet bright early late warm cold green yellow simple careful "
    "happy heavy light narrow open silver wooden gentle rapid distant busy calm "
    "fresh empty golden hidden local modern plain round sharp soft steady"
).split()
_EN_NOUN = (
    "river garden window market teacher doctor engine station kitchen letter "
    "mountain village morning evening pencil basket bottle bridge camera candle "
    "carpet castle cottage dinner farmer forest harbor island ladder meadow "
    "orchard painter picture pocket rabbit sailor signal summer ticket tower "
    "valley wagon winter button planet music paper coffee number corner"
).split()
_EN_VERB = (
    "carries finds follows opens watches paints builds moves cleans brings "
    "covers reaches passes counts fixes holds keeps leaves marks needs"
).split()
_EN_PREP = "near behind under over beside across along inside past toward".split()
_EN_ADV = "slowly quickly often never always today again soon early later".split()

_WORDS = {
    "fr": (
        "le la un une petit grand maison jardin rivière matin soir chat chien "
        "livre table porte fenêtre voiture ville village marché pain fromage "
        "rouge vert bleu belle beau vieux nouveau parle mange regarde ouvre "
        "ferme prend donne trouve toujours souvent demain hier ici là avec "
        "sans sous sur dans pour"
    ).split(),
    "de": (
        "der die das ein eine klein groß Haus Garten Fluss Morgen Abend Katze "
        "Hund Buch Tisch Tür Fenster Wagen Stadt Dorf Markt Brot Käse rot grün "
        "blau schön alt neu spricht isst sieht öffnet schließt nimmt gibt "
        "findet immer oft morgen gestern hier dort mit ohne unter auf in für"
    ).split(),
    "es": (
        "el la un una pequeño grande casa jardín río mañana tarde gato perro "
        "libro mesa puerta ventana coche ciudad pueblo mercado pan queso rojo "
        "verde azul bonito viejo nuevo habla come mira abre cierra toma da "
        "encuentra siempre a menudo ayer aquí allí con sin bajo sobre en para"
    ).split(),
    "it": (
        "il la un una piccolo grande casa giardino fiume mattina sera gatto "
        "cane libro tavolo porta finestra macchina città paese mercato pane "
        "formaggio rosso verde blu bello vecchio nuovo parla mangia guarda "
        "apre chiude prende dà trova sempre spesso domani ieri qui là con "
        "senza sotto sopra in per"
    ).split(),
    "pt": (
        "o a um uma pequeno grande casa jardim rio manhã tarde gato cão livro "
        "mesa porta janela carro cidade aldeia mercado pão queijo vermelho "
        "verde azul bonito velho novo fala come olha abre fecha toma dá "
        "encontra sempre muitas vezes amanhã ontem aqui ali com sem sob sobre "
        "em para"
    ).split(),
    "nl": (
        "de het een klein groot huis tuin rivier morgen avond kat hond boek "
        "tafel deur raam auto stad dorp markt brood kaas rood groen blauw "
        "mooi oud nieuw spreekt eet kijkt opent sluit neemt geeft vindt "
        "altijd vaak gisteren hier daar met zonder onder op in voor"
    ).split(),
}

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _english_sentence(rng, n_words):
    """Template English sentence of ``n_words`` words from the built-in lists."""
    words = []
    while len(words) < n_words:
        pattern = rng.integers(4)
        det = _EN_DET[rng.integers(len(_EN_DET))]
        adj = _EN_ADJ[rng.integers(len(_EN_ADJ))]
        noun = _EN_NOUN[rng.integers(len(_EN_NOUN))]
        verb = _EN_VERB[rng.integers(len(_EN_VERB))]
        noun2 = _EN_NOUN[rng.integers(len(_EN_NOUN))]
        prep = _EN_PREP[rng.integers(len(_EN_PREP))]
        adv = _EN_ADV[rng.integers(len(_EN_ADV))]
        if pattern == 0:
            words += [det, adj, noun, verb, "the", noun2]
        elif pattern == 1:
            words += [det, noun, verb, adv, prep, "the", noun2]
        elif pattern == 2:
            words += [adv, det, noun, verb, "a", adj, noun2]
        else:
            words += [det, noun, prep, "the", noun2, verb]
    words = words[:n_words]
    return " ".join(words).capitalize() + "."


def make_text(rng, language, n_words):
    """Return a random sentence of about ``n_words`` words for an espeak voice.

    English voices get template sentences from a small built-in word list; a few
    other languages (fr, de, es, it, pt, nl) draw from their own list; any other
    language gets pseudo-words made of consonant-vowel syllables.

    Arguments
    ---------
    rng : numpy.random.Generator
    language : str
        espeak voice name (e.g. ``"en-gb-x-rp"``, ``"fr"``).
    n_words : int

    Returns
    -------
    str
    """
    n_words = max(2, int(n_words))
    base = language.split("-")[0].lower()
    if base == "en":
        return _english_sentence(rng, n_words)
    vocab = _WORDS.get(base)
    if vocab is None:
        vocab = [
            "".join(_SYLLABLES[i] for i in rng.integers(len(_SYLLABLES), size=k))
            for k in rng.integers(1, 4, size=64)
        ]
    words = [vocab[i] for i in rng.integers(len(vocab), size=n_words)]
    return " ".join(words).capitalize() + "."
