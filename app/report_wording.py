"""The few fixed words of an exported report (the References heading, the notes on weak and unchecked
citations, the questions appendix) in the report's language; a language not in the table keeps English.
Both the engine, which writes the report, and the exports, which find its References, read this table."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ReportWords:
    references: str
    weak_note: str  # after "⚑ "
    unchecked_note: str  # "{count}": how many citations could not be checked
    questions: str  # the appendix of questions asked of the report
    answer_sources: str  # before the sources only the answers cite


ENGLISH = ReportWords(
    "References",
    "marks a citation whose sentence shares few words with the cited passage (weak support).",
    "Citations not checked against their passage: {count} (the sentence and the passage are in different "
    "languages and share no number or name).",
    "Questions and answers",
    "Sources cited only in these answers:",
)

# Written for sala-report, one per language brief.LANGUAGE_NAMES names that we could write with care.
WORDS: dict[str, ReportWords] = {
    "en": ENGLISH,
    "zh": ReportWords(
        "参考文献",
        "表示该引用所在的句子与所引段落几乎没有共同内容（支持较弱）。",
        "未能与所引段落核对的引用：{count} 处（句子与段落使用不同的语言，且没有共同的数字或名称）。",
        "问题与解答",
        "仅在这些解答中引用的资料：",
    ),
    "ja": ReportWords(
        "参考文献",
        "は、文と引用箇所との共通点が少ない引用（根拠が弱い）を示します。",
        "引用箇所と照合できなかった引用：{count} 件（文と引用箇所の言語が異なり、共通の数値や名称がありません）。",
        "質問と回答",
        "これらの回答でのみ引用した資料：",
    ),
    "ko": ReportWords(
        "참고 문헌",
        "표시는 문장과 인용된 구절 사이에 공통된 내용이 적은 인용(근거가 약함)을 나타냅니다.",
        "인용된 구절과 대조하지 못한 인용: {count}개 (문장과 구절의 언어가 다르고 공통된 숫자나 이름이 없습니다).",
        "질문과 답변",
        "이 답변에서만 인용된 자료:",
    ),
    "de": ReportWords(
        "Quellen",
        "kennzeichnet ein Zitat, dessen Satz kaum Wörter mit der zitierten Passage teilt (schwache Stütze).",
        "Nicht mit ihrer Passage abgeglichene Zitate: {count} (Satz und Passage sind in verschiedenen Sprachen "
        "und teilen keine Zahl und keinen Namen).",
        "Fragen und Antworten",
        "Nur in diesen Antworten zitierte Quellen:",
    ),
    "fr": ReportWords(
        "Références",
        "signale une citation dont la phrase partage peu de mots avec le passage cité (appui faible).",
        "Citations non vérifiées par rapport à leur passage : {count} (la phrase et le passage sont dans des "
        "langues différentes et n’ont ni nombre ni nom en commun).",
        "Questions et réponses",
        "Sources citées uniquement dans ces réponses :",
    ),
    "es": ReportWords(
        "Referencias",
        "marca una cita cuya oración comparte pocas palabras con el pasaje citado (apoyo débil).",
        "Citas no verificadas con su pasaje: {count} (la oración y el pasaje están en idiomas distintos y no "
        "comparten ningún número ni nombre).",
        "Preguntas y respuestas",
        "Fuentes citadas solo en estas respuestas:",
    ),
    "it": ReportWords(
        "Riferimenti",
        "indica una citazione la cui frase ha poche parole in comune con il passo citato (supporto debole).",
        "Citazioni non verificate rispetto al passo citato: {count} (la frase e il passo sono in lingue diverse "
        "e non hanno numeri né nomi in comune).",
        "Domande e risposte",
        "Fonti citate solo in queste risposte:",
    ),
    "pt": ReportWords(
        "Referências",
        "marca uma citação cuja frase tem poucas palavras em comum com o trecho citado (apoio fraco).",
        "Citações não verificadas com o trecho citado: {count} (a frase e o trecho estão em línguas diferentes "
        "e não têm número nem nome em comum).",
        "Perguntas e respostas",
        "Fontes citadas apenas nestas respostas:",
    ),
}

# What people type for these languages besides the codes: English names (brief.LANGUAGE_NAMES) and their own.
_NAMES = {
    "english": "en",
    "chinese": "zh",
    "mandarin": "zh",
    "中文": "zh",
    "汉语": "zh",
    "japanese": "ja",
    "日本語": "ja",
    "korean": "ko",
    "한국어": "ko",
    "german": "de",
    "deutsch": "de",
    "french": "fr",
    "français": "fr",
    "spanish": "es",
    "español": "es",
    "italian": "it",
    "italiano": "it",
    "portuguese": "pt",
    "português": "pt",
}


def words_for(language: str) -> ReportWords:
    """The words for a report language as the brief holds it: a code ("zh", "zh-TW", "pt_BR") or a name
    ("Chinese", "Portuguese (Brazil)", "Deutsch"); English for "" and for languages not in the table."""
    text = language.strip().lower()
    head = re.split(r"[-_ (]", text, maxsplit=1)[0]
    for candidate in (text, head):
        code = candidate if candidate in WORDS else _NAMES.get(candidate)
        if code:
            return WORDS[code]
    return ENGLISH


# Every References heading a report of ours may have, lower-cased, for the exports that look for it.
REFERENCE_HEADINGS = frozenset(w.references.lower() for w in WORDS.values())
_KANA = re.compile(r"[\u3040-\u30ff]")


def words_of(markdown: str, heading: str) -> ReportWords:
    """The words of the report whose References heading is `heading` (Chinese and Japanese share theirs:
    a report with kana in it is Japanese); English when the heading is none of ours."""
    matches = [w for w in WORDS.values() if w.references.lower() == heading.strip().lower()]
    if len(matches) > 1:
        return WORDS["ja"] if _KANA.search(markdown) else WORDS["zh"]
    return matches[0] if matches else ENGLISH
