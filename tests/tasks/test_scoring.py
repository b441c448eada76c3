"""corrsteer.tasks.scoring: free-form text, number and label answers read from realistic model outputs (directly,
and through Task.score), and the number words it reads."""
import pytest

from corrsteer.tasks.scoring import extract_label, extract_number, number_words, numbers_in, score_short
from corrsteer.tasks.task import Item, Task, get_task

SHORT_CASES = [  # output, gold, question, correct
    ("Paris", "Paris", "", True), ("The capital of France is Paris.", "Paris", "", True),
    ("I think it's Paris, France.", "Paris", "", True), ("paris!", "Paris", "", True),
    ("The capital is Canberra, not Sydney.", "Canberra", "", True),
    ("The capital is Sydney, not Canberra.", "Canberra", "", False),
    ("The capital of Australia is Sydney.", "Canberra", "", False),
    ("The capital of Iceland is Reykjavik.", "Reykjavík", "", True),
    ("Bogota", "Bogotá", "", True), ("Kuwait", "Kuwait City", "", False),
    ("The capital of Brazil is Sao Paulo.", "Brasília", "", False),
    ("It's N'Djamena.", "N'Djamena", "", True), ("Kenya is the capital city of Kenya.", "Nairobi", "", False),
]


@pytest.mark.parametrize("output,gold,question,ok", SHORT_CASES)
def test_score_short_text(output, gold, question, ok):
    pred, y = score_short(output, gold, question)
    assert y == float(ok)
    if ok:
        assert pred == gold


def test_capital_aliases():
    task = get_task("capitals")
    item = next(it for it in task.items if it.gold == "Kyiv")
    assert task.score(item, "The capital of Ukraine is Kiev.") == ("Kyiv", 1.0)
    item = next(it for it in task.items if it.gold == "Washington, D.C.")
    assert task.score(item, "Washington DC.")[1] == 1.0


NUM_CASES = [  # output, question, pred
    ("5", "What is 2 + 3?", "5"), ("2 + 3 = 5", "What is 2 + 3?", "5"), ("The answer is 12.", "What is 3 * 4?", "12"),
    ("1,000", "What is 10 * 100?", "1000"), ("1000.0", "", "1000"), ("one thousand", "", "1000"),
    ("Seven times eight is fifty-six.", "What is seven times eight?", "56"),
    ("7 times 8 is 56.", "What is 7 times 8?", "56"), ("The product of 7 and 8 is 56.", "What is 7 times 8?", "56"),
    ("56, because 7 times 8 is 56.", "What is 7 times 8?", "56"), ("8 - 4 is 4", "What is 8 - 4?", "4"),
    ("Multiply 3 by 2, which is 6.", "Multiply 3 by 2.", "6"), ("The answer is: 12", "", "12"),
    ("12 multiplied by 11 is 121.", "What is 12 multiplied by 11?", "121"),
    ("To find 7 x 8, compute 7 x 8 = 56.", "What is 7 x 8?", "56"), ("x = 7 * 8 = 56", "What is 7 * 8?", "56"),
    ("x=7*8=56", "What is 7*8?", "56"), ("**56**", "What is 7 * 8?", "56"),
    ("The sum of 45 and 38 is 83.", "What is 45 + 38?", "83"), ("I am not sure.", "What is 45 + 38?", ""),
    ("The answer is 12 + 67 = 79.", "What is 12 + 67?", "79"), ("3.5", "", "3.5"), ("one hundred and five", "", "105"),
]


@pytest.mark.parametrize("output,question,pred", NUM_CASES)
def test_extract_number(output, question, pred):
    assert extract_number(output, question) == pred


def test_score_short_numeric():
    assert score_short("2 + 3 = 5", "5", "What is 2 + 3?") == ("5", 1.0)
    assert score_short("1,000", "1000") == ("1000", 1.0)
    assert score_short("1000.0", "1000")[1] == 1.0
    assert score_short("The answer is 186.", "117", "Add 63 and 54.") == ("186", 0.0)
    assert score_short("17 + 25 = 32.", "42", "What is 17 + 25?") == ("32", 0.0)
    assert score_short("To add 45 and 38 we first", "83", "What is 45 + 38?")[1] == 0.0


LABELS = ["positive", "negative", "neutral"]
LABEL_CASES = [
    ("Negative.", "negative"), ("negative", "negative"), ("NEGATIVE", "negative"), ("Positive", "positive"),
    ("This review is neutral.", "neutral"), ("The sentiment of this review is negative.", "negative"),
    ("The review is positive, with a neutral tone.", "positive|neutral"),      # two labels named: a hedge
    ("Sentiment: Negative", "negative"),
    ("I'd say it is mostly positive.", "positive"), ("The reviewer is unhappy.", ""), ("", ""),
    ("non-negative", ""), ("Negatively.", ""),
]


@pytest.mark.parametrize("output,pred", LABEL_CASES)
def test_score_label(output, pred):
    item = Item("s", "Classify ...", "negative", "label", labels=LABELS)
    assert extract_label(output, LABELS) == pred
    assert Task("t", "label", [item], 16).score(item, output) == (pred, float(pred == "negative"))


def test_number_words_read_and_written():
    assert numbers_in("fifty-six apples and one hundred and five pears") == "56 apples and 105 pears"
    assert numbers_in("seven eight, 1,000 and 12,34") == "7 8, 1000 and 12,34"
    assert numbers_in("two thousand and one") == "2001"
    assert [number_words(n) for n in (0, 13, 40, 56, 105, 999)] == [
        "zero", "thirteen", "forty", "fifty-six", "one hundred and five", "nine hundred and ninety-nine"]
    assert all(numbers_in(number_words(n)) == str(n) for n in range(1000))
    with pytest.raises(ValueError):
        number_words(1000)
