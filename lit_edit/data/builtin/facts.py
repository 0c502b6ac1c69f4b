"""Candidate facts for the built-in counterfactual edit set.

Plain data: ``RELATIONS`` maps a relation id to its prompt templates and its facts
(subject -> true object). Every template has one ``{}`` for the subject and ends right before the
object, so the model reads ``template.format(subject) + " " + object``. Objects are written
without a leading space, as :class:`lit_edit.data.records.EditRecord` expects.

The FIRST template of each relation is the one ``scripts/build_edit_set.py`` uses to decide
whether the model knows a fact; the others become paraphrases.

Only facts with one clear answer are listed (no disputed capitals, no multi-lingual countries,
no people with several equally famous professions), and subjects are spelled identically across
relations so that one subject's facts can be found together (``the Netherlands`` everywhere, never
``Netherlands``). A subject starting with a lower-case article is capitalised when it opens a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """A relation: how to ask about it, and which (subject -> object) facts to ask."""

    name: str
    description: str
    templates: tuple[str, ...]
    facts: dict[str, str]


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    target: str


def fill(template: str, subject: str) -> str:
    """The prompt for ``subject``; a sentence never starts with a lower-case letter."""
    text = template.format(subject)
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Countries: (country, capital, continent, main language, currency); None where the answer is
# not a single clear one (several official languages, disputed or split capitals, ...).
# ---------------------------------------------------------------------------------------------
COUNTRIES: tuple[tuple[str, str | None, str | None, str | None, str | None], ...] = (
    # Europe
    ("France", "Paris", "Europe", "French", "euro"),
    ("Germany", "Berlin", "Europe", "German", "euro"),
    ("Italy", "Rome", "Europe", "Italian", "euro"),
    ("Spain", "Madrid", "Europe", "Spanish", "euro"),
    ("Portugal", "Lisbon", "Europe", "Portuguese", "euro"),
    ("the United Kingdom", "London", "Europe", "English", "pound"),
    ("Ireland", "Dublin", "Europe", "English", "euro"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch", "euro"),
    ("Belgium", "Brussels", "Europe", None, "euro"),
    ("Switzerland", "Bern", "Europe", None, "franc"),
    ("Austria", "Vienna", "Europe", "German", "euro"),
    ("Poland", "Warsaw", "Europe", "Polish", "zloty"),
    ("the Czech Republic", "Prague", "Europe", "Czech", "koruna"),
    ("Slovakia", "Bratislava", "Europe", "Slovak", "euro"),
    ("Hungary", "Budapest", "Europe", "Hungarian", "forint"),
    ("Romania", "Bucharest", "Europe", "Romanian", "leu"),
    ("Bulgaria", "Sofia", "Europe", "Bulgarian", None),
    ("Greece", "Athens", "Europe", "Greek", "euro"),
    ("Turkey", "Ankara", None, "Turkish", "lira"),
    ("Russia", "Moscow", None, "Russian", "ruble"),
    ("Ukraine", "Kyiv", "Europe", "Ukrainian", "hryvnia"),
    ("Belarus", "Minsk", "Europe", None, "ruble"),
    ("Lithuania", "Vilnius", "Europe", "Lithuanian", "euro"),
    ("Latvia", "Riga", "Europe", "Latvian", "euro"),
    ("Estonia", "Tallinn", "Europe", "Estonian", "euro"),
    ("Finland", "Helsinki", "Europe", "Finnish", "euro"),
    ("Sweden", "Stockholm", "Europe", "Swedish", "krona"),
    ("Norway", "Oslo", "Europe", "Norwegian", "krone"),
    ("Denmark", "Copenhagen", "Europe", "Danish", "krone"),
    ("Iceland", "Reykjavik", "Europe", "Icelandic", None),
    ("Serbia", "Belgrade", "Europe", "Serbian", "dinar"),
    ("Croatia", "Zagreb", "Europe", "Croatian", "euro"),
    ("Slovenia", "Ljubljana", "Europe", "Slovenian", "euro"),
    ("Bosnia and Herzegovina", "Sarajevo", "Europe", None, None),
    ("Albania", "Tirana", "Europe", "Albanian", "lek"),
    ("North Macedonia", "Skopje", "Europe", "Macedonian", "denar"),
    ("Montenegro", "Podgorica", "Europe", None, "euro"),
    ("Moldova", "Chisinau", "Europe", None, "leu"),
    ("Malta", "Valletta", "Europe", None, "euro"),
    ("Luxembourg", None, "Europe", None, "euro"),
    # Asia
    ("China", "Beijing", "Asia", "Chinese", "yuan"),
    ("Japan", "Tokyo", "Asia", "Japanese", "yen"),
    ("South Korea", "Seoul", "Asia", "Korean", "won"),
    ("North Korea", "Pyongyang", "Asia", "Korean", "won"),
    ("Mongolia", "Ulaanbaatar", "Asia", "Mongolian", None),
    ("India", "New Delhi", "Asia", None, "rupee"),
    ("Pakistan", "Islamabad", "Asia", None, "rupee"),
    ("Bangladesh", "Dhaka", "Asia", "Bengali", "taka"),
    ("Nepal", "Kathmandu", "Asia", "Nepali", "rupee"),
    ("Sri Lanka", None, "Asia", None, "rupee"),
    ("Afghanistan", "Kabul", "Asia", None, "afghani"),
    ("Iran", "Tehran", "Asia", "Persian", "rial"),
    ("Iraq", "Baghdad", "Asia", "Arabic", "dinar"),
    ("Syria", "Damascus", "Asia", "Arabic", "pound"),
    ("Lebanon", "Beirut", "Asia", "Arabic", "pound"),
    ("Jordan", "Amman", "Asia", "Arabic", "dinar"),
    ("Israel", None, "Asia", "Hebrew", "shekel"),
    ("Saudi Arabia", "Riyadh", "Asia", "Arabic", "riyal"),
    ("Yemen", None, "Asia", "Arabic", "rial"),
    ("Oman", "Muscat", "Asia", "Arabic", "rial"),
    ("the United Arab Emirates", "Abu Dhabi", "Asia", "Arabic", "dirham"),
    ("Qatar", "Doha", "Asia", "Arabic", "riyal"),
    ("Kuwait", None, "Asia", "Arabic", "dinar"),
    ("Thailand", "Bangkok", "Asia", "Thai", "baht"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese", "dong"),
    ("Cambodia", "Phnom Penh", "Asia", "Khmer", "riel"),
    ("Laos", "Vientiane", "Asia", "Lao", "kip"),
    ("Myanmar", None, "Asia", "Burmese", "kyat"),
    ("Malaysia", "Kuala Lumpur", "Asia", "Malay", "ringgit"),
    ("Indonesia", None, "Asia", "Indonesian", "rupiah"),
    ("the Philippines", "Manila", "Asia", None, "peso"),
    ("Uzbekistan", "Tashkent", "Asia", "Uzbek", None),
    ("Kazakhstan", None, "Asia", None, "tenge"),
    ("Kyrgyzstan", "Bishkek", "Asia", None, None),
    ("Tajikistan", "Dushanbe", "Asia", "Tajik", "somoni"),
    ("Turkmenistan", "Ashgabat", "Asia", "Turkmen", "manat"),
    ("Bhutan", "Thimphu", "Asia", "Dzongkha", "ngultrum"),
    # Oceania (no continent: "Australia is located in the continent of Australia" is a riddle)
    ("Australia", "Canberra", None, "English", "dollar"),
    ("New Zealand", "Wellington", None, "English", "dollar"),
    ("Fiji", "Suva", None, None, "dollar"),
    ("Papua New Guinea", "Port Moresby", None, None, "kina"),
    # Africa
    ("Egypt", "Cairo", "Africa", "Arabic", "pound"),
    ("Libya", "Tripoli", "Africa", "Arabic", "dinar"),
    ("Tunisia", "Tunis", "Africa", "Arabic", "dinar"),
    ("Algeria", "Algiers", "Africa", "Arabic", "dinar"),
    ("Morocco", "Rabat", "Africa", "Arabic", "dirham"),
    ("Sudan", None, "Africa", "Arabic", "pound"),
    ("Ethiopia", "Addis Ababa", "Africa", None, "birr"),
    ("Kenya", "Nairobi", "Africa", None, "shilling"),
    ("Uganda", "Kampala", "Africa", None, "shilling"),
    ("Tanzania", None, "Africa", "Swahili", "shilling"),
    ("Rwanda", "Kigali", "Africa", None, "franc"),
    ("Somalia", "Mogadishu", "Africa", "Somali", "shilling"),
    ("Nigeria", "Abuja", "Africa", None, "naira"),
    ("Ghana", "Accra", "Africa", None, "cedi"),
    ("Senegal", "Dakar", "Africa", None, "franc"),
    ("Mali", "Bamako", "Africa", None, "franc"),
    ("Niger", "Niamey", "Africa", None, "franc"),
    ("Chad", "N'Djamena", "Africa", None, "franc"),
    ("Cameroon", "Yaoundé", "Africa", None, "franc"),
    ("Angola", "Luanda", "Africa", "Portuguese", "kwanza"),
    ("Zambia", "Lusaka", "Africa", None, "kwacha"),
    ("Malawi", "Lilongwe", "Africa", None, "kwacha"),
    ("Zimbabwe", "Harare", "Africa", None, None),
    ("Mozambique", "Maputo", "Africa", None, "metical"),
    ("Madagascar", "Antananarivo", "Africa", None, "ariary"),
    ("South Africa", None, "Africa", None, "rand"),
    ("Botswana", "Gaborone", "Africa", None, "pula"),
    ("Namibia", "Windhoek", "Africa", None, "dollar"),
    ("the Democratic Republic of the Congo", "Kinshasa", "Africa", None, "franc"),
    ("Liberia", "Monrovia", "Africa", "English", "dollar"),
    ("Sierra Leone", "Freetown", "Africa", None, "leone"),
    ("Guinea", "Conakry", "Africa", None, "franc"),
    ("Eritrea", "Asmara", "Africa", None, "nakfa"),
    # North America (with Central America and the Caribbean)
    ("the United States", "Washington", "North America", "English", "dollar"),
    ("Canada", "Ottawa", "North America", "English", "dollar"),
    ("Mexico", "Mexico City", "North America", "Spanish", "peso"),
    ("Cuba", "Havana", "North America", "Spanish", "peso"),
    ("Jamaica", "Kingston", "North America", "English", "dollar"),
    ("Haiti", "Port-au-Prince", "North America", None, "gourde"),
    ("the Dominican Republic", "Santo Domingo", "North America", "Spanish", "peso"),
    ("the Bahamas", "Nassau", "North America", "English", "dollar"),
    ("Guatemala", None, "North America", "Spanish", "quetzal"),
    ("Honduras", "Tegucigalpa", "North America", "Spanish", "lempira"),
    ("El Salvador", "San Salvador", "North America", "Spanish", None),
    ("Nicaragua", "Managua", "North America", "Spanish", None),
    ("Costa Rica", "San José", "North America", "Spanish", None),
    ("Panama", None, "North America", "Spanish", None),
    # South America
    ("Brazil", "Brasília", "South America", "Portuguese", "real"),
    ("Argentina", "Buenos Aires", "South America", "Spanish", "peso"),
    ("Chile", "Santiago", "South America", "Spanish", "peso"),
    ("Colombia", "Bogotá", "South America", "Spanish", "peso"),
    ("Peru", "Lima", "South America", "Spanish", "sol"),
    ("Venezuela", "Caracas", "South America", "Spanish", None),
    ("Ecuador", "Quito", "South America", "Spanish", "dollar"),
    ("Bolivia", None, "South America", None, "boliviano"),
    ("Uruguay", "Montevideo", "South America", "Spanish", "peso"),
    ("Paraguay", "Asunción", "South America", None, None),
)


def _column(index: int) -> dict[str, str]:
    return {row[0]: row[index] for row in COUNTRIES if row[index] is not None}  # type: ignore[misc]


CITY_COUNTRY = {
    # France
    "Lyon": "France", "Marseille": "France", "Nice": "France", "Toulouse": "France", "Bordeaux": "France",
    "Strasbourg": "France", "Lille": "France", "Nantes": "France", "Cannes": "France",
    # Germany
    "Munich": "Germany", "Hamburg": "Germany", "Frankfurt": "Germany", "Cologne": "Germany",
    "Stuttgart": "Germany", "Dresden": "Germany", "Leipzig": "Germany", "Düsseldorf": "Germany",
    "Nuremberg": "Germany", "Bremen": "Germany", "Hanover": "Germany",
    # Italy
    "Milan": "Italy", "Naples": "Italy", "Venice": "Italy", "Florence": "Italy", "Turin": "Italy",
    "Bologna": "Italy", "Genoa": "Italy", "Palermo": "Italy", "Verona": "Italy", "Pisa": "Italy",
    # Spain and Portugal
    "Barcelona": "Spain", "Seville": "Spain", "Bilbao": "Spain", "Málaga": "Spain", "Zaragoza": "Spain",
    "Salamanca": "Spain", "Porto": "Portugal", "Coimbra": "Portugal", "Faro": "Portugal",
    # Britain and Ireland
    "Manchester": "England", "Liverpool": "England", "Birmingham": "England", "Leeds": "England",
    "Bristol": "England", "Oxford": "England", "Sheffield": "England", "Brighton": "England",
    "Edinburgh": "Scotland", "Glasgow": "Scotland", "Aberdeen": "Scotland",
    "Cardiff": "Wales", "Swansea": "Wales", "Cork": "Ireland", "Galway": "Ireland",
    # Central and Northern Europe
    "Zurich": "Switzerland", "Geneva": "Switzerland", "Basel": "Switzerland", "Lausanne": "Switzerland",
    "Salzburg": "Austria", "Innsbruck": "Austria", "Graz": "Austria",
    "Krakow": "Poland", "Gdansk": "Poland", "Debrecen": "Hungary",
    "Gothenburg": "Sweden", "Uppsala": "Sweden", "Bergen": "Norway", "Trondheim": "Norway",
    "Aarhus": "Denmark", "Odense": "Denmark", "Tampere": "Finland", "Turku": "Finland",
    # Eastern Europe and Turkey
    "Saint Petersburg": "Russia", "Novosibirsk": "Russia", "Vladivostok": "Russia", "Yekaterinburg": "Russia",
    "Kazan": "Russia", "Odessa": "Ukraine", "Kharkiv": "Ukraine", "Lviv": "Ukraine",
    "Thessaloniki": "Greece", "Istanbul": "Turkey", "Izmir": "Turkey", "Antalya": "Turkey",
    # East Asia
    "Osaka": "Japan", "Kyoto": "Japan", "Yokohama": "Japan", "Hiroshima": "Japan", "Nagoya": "Japan",
    "Sapporo": "Japan", "Kobe": "Japan", "Nagasaki": "Japan", "Fukuoka": "Japan",
    "Shanghai": "China", "Guangzhou": "China", "Shenzhen": "China", "Chengdu": "China", "Wuhan": "China",
    "Xi'an": "China", "Nanjing": "China", "Hangzhou": "China", "Tianjin": "China", "Chongqing": "China",
    "Busan": "South Korea", "Incheon": "South Korea", "Daegu": "South Korea",
    # South and Southeast Asia
    "Mumbai": "India", "Kolkata": "India", "Bangalore": "India", "Chennai": "India", "Agra": "India",
    "Jaipur": "India", "Varanasi": "India", "Pune": "India", "Ahmedabad": "India",
    "Karachi": "Pakistan", "Lahore": "Pakistan", "Peshawar": "Pakistan",
    "Saigon": "Vietnam", "Da Nang": "Vietnam", "Chiang Mai": "Thailand", "Phuket": "Thailand",
    "Surabaya": "Indonesia", "Bandung": "Indonesia", "Yogyakarta": "Indonesia",
    # Middle East
    "Isfahan": "Iran", "Shiraz": "Iran", "Tabriz": "Iran", "Mashhad": "Iran", "Basra": "Iraq", "Mosul": "Iraq",
    "Aleppo": "Syria", "Homs": "Syria", "Jeddah": "Saudi Arabia", "Mecca": "Saudi Arabia",
    "Medina": "Saudi Arabia", "Tel Aviv": "Israel", "Haifa": "Israel",
    # Africa
    "Alexandria": "Egypt", "Luxor": "Egypt", "Aswan": "Egypt", "Giza": "Egypt",
    "Casablanca": "Morocco", "Marrakesh": "Morocco", "Fez": "Morocco", "Tangier": "Morocco",
    "Lagos": "Nigeria", "Kano": "Nigeria", "Ibadan": "Nigeria", "Mombasa": "Kenya", "Kisumu": "Kenya",
    "Johannesburg": "South Africa", "Cape Town": "South Africa", "Durban": "South Africa",
    # Oceania
    "Sydney": "Australia", "Melbourne": "Australia", "Perth": "Australia", "Brisbane": "Australia",
    "Adelaide": "Australia", "Auckland": "New Zealand", "Christchurch": "New Zealand",
    "Queenstown": "New Zealand",
    # The Americas
    "Toronto": "Canada", "Vancouver": "Canada", "Montreal": "Canada", "Calgary": "Canada", "Edmonton": "Canada",
    "Quebec": "Canada", "Winnipeg": "Canada",
    "Monterrey": "Mexico", "Cancun": "Mexico", "Tijuana": "Mexico", "Acapulco": "Mexico", "Puebla": "Mexico",
    "Rio de Janeiro": "Brazil", "São Paulo": "Brazil", "Recife": "Brazil", "Fortaleza": "Brazil",
    "Manaus": "Brazil", "Rosario": "Argentina", "Mendoza": "Argentina", "Valparaíso": "Chile",
    "Cusco": "Peru", "Arequipa": "Peru", "Medellín": "Colombia", "Cali": "Colombia", "Maracaibo": "Venezuela",
}

US_CITY_STATE = {
    "Los Angeles": "California", "San Francisco": "California", "San Diego": "California",
    "Sacramento": "California", "Chicago": "Illinois", "Houston": "Texas", "Dallas": "Texas",
    "Austin": "Texas", "San Antonio": "Texas", "Miami": "Florida", "Orlando": "Florida", "Tampa": "Florida",
    "Seattle": "Washington", "Denver": "Colorado", "Phoenix": "Arizona", "Tucson": "Arizona",
    "Las Vegas": "Nevada", "Boston": "Massachusetts", "Philadelphia": "Pennsylvania",
    "Pittsburgh": "Pennsylvania", "Detroit": "Michigan", "Atlanta": "Georgia", "Savannah": "Georgia",
    "Nashville": "Tennessee", "Memphis": "Tennessee", "New Orleans": "Louisiana", "Baltimore": "Maryland",
    "Cleveland": "Ohio", "Cincinnati": "Ohio", "Minneapolis": "Minnesota", "St. Louis": "Missouri",
    "Milwaukee": "Wisconsin", "Indianapolis": "Indiana",
    "Charlotte": "North Carolina", "Honolulu": "Hawaii", "Anchorage": "Alaska", "Albuquerque": "New Mexico",
    "Omaha": "Nebraska", "Louisville": "Kentucky", "Buffalo": "New York",
    "Boise": "Idaho", "Des Moines": "Iowa", "Providence": "Rhode Island", "Hartford": "Connecticut",
}

STATE_CAPITAL = {
    "California": "Sacramento", "Texas": "Austin", "Florida": "Tallahassee", "New York": "Albany",
    "Illinois": "Springfield", "Pennsylvania": "Harrisburg", "Ohio": "Columbus", "Michigan": "Lansing",
    "Georgia": "Atlanta", "Massachusetts": "Boston", "Arizona": "Phoenix", "Colorado": "Denver",
    "Washington": "Olympia", "Oregon": "Salem", "Nevada": "Carson City", "Utah": "Salt Lake City",
    "Tennessee": "Nashville", "Louisiana": "Baton Rouge", "Minnesota": "Saint Paul", "Wisconsin": "Madison",
    "Indiana": "Indianapolis", "Missouri": "Jefferson City", "Virginia": "Richmond",
    "North Carolina": "Raleigh", "South Carolina": "Columbia", "Alabama": "Montgomery",
    "Kentucky": "Frankfort", "Hawaii": "Honolulu", "Alaska": "Juneau", "New Jersey": "Trenton",
    "Maryland": "Annapolis", "Connecticut": "Hartford", "Rhode Island": "Providence", "Iowa": "Des Moines",
    "Idaho": "Boise", "Kansas": "Topeka", "Nebraska": "Lincoln",
    "New Mexico": "Santa Fe", "Maine": "Augusta", "Vermont": "Montpelier", "New Hampshire": "Concord",
    "Delaware": "Dover", "West Virginia": "Charleston", "Arkansas": "Little Rock", "Mississippi": "Jackson",
    "Montana": "Helena", "Wyoming": "Cheyenne", "North Dakota": "Bismarck", "South Dakota": "Pierre",
}

LANDMARK_COUNTRY = {
    "the Eiffel Tower": "France", "the Louvre": "France", "the Arc de Triomphe": "France",
    "the Palace of Versailles": "France", "Mont Saint-Michel": "France", "the Champs-Élysées": "France",
    "the Colosseum": "Italy", "the Leaning Tower of Pisa": "Italy", "the Trevi Fountain": "Italy",
    "St. Mark's Basilica": "Italy", "the Uffizi Gallery": "Italy", "the Rialto Bridge": "Italy",
    "La Scala": "Italy", "the Spanish Steps": "Italy",
    "the Sagrada Família": "Spain", "the Alhambra": "Spain", "the Prado Museum": "Spain",
    "the Acropolis": "Greece", "the Parthenon": "Greece",
    "Big Ben": "England", "Buckingham Palace": "England", "Stonehenge": "England", "Tower Bridge": "England",
    "Westminster Abbey": "England", "Trafalgar Square": "England",
    "Neuschwanstein Castle": "Germany", "the Brandenburg Gate": "Germany", "Checkpoint Charlie": "Germany",
    "Schönbrunn Palace": "Austria", "the Atomium": "Belgium", "Manneken Pis": "Belgium",
    "Tivoli Gardens": "Denmark", "Wawel Castle": "Poland",
    "the Kremlin": "Russia", "Red Square": "Russia", "St. Basil's Cathedral": "Russia",
    "the Bolshoi Theatre": "Russia", "the Hermitage Museum": "Russia", "Lake Baikal": "Russia",
    "Hagia Sophia": "Turkey", "the Blue Mosque": "Turkey", "the Grand Bazaar": "Turkey",
    "the Forbidden City": "China", "Tiananmen Square": "China", "the Terracotta Army": "China",
    "Mount Fuji": "Japan", "Kinkaku-ji": "Japan", "Senso-ji": "Japan",
    "the Taj Mahal": "India", "the Red Fort": "India", "the Golden Temple": "India",
    "Angkor Wat": "Cambodia", "Ha Long Bay": "Vietnam", "the Petronas Towers": "Malaysia",
    "Borobudur": "Indonesia", "the Shwedagon Pagoda": "Myanmar", "Petra": "Jordan", "the Kaaba": "Saudi Arabia",
    "the Great Pyramid of Giza": "Egypt", "Abu Simbel": "Egypt", "the Valley of the Kings": "Egypt",
    "Mount Kilimanjaro": "Tanzania", "Table Mountain": "South Africa",
    "Uluru": "Australia", "the Great Barrier Reef": "Australia", "the Sydney Opera House": "Australia",
    "Milford Sound": "New Zealand", "the CN Tower": "Canada", "Banff National Park": "Canada",
    "Chichen Itza": "Mexico", "Machu Picchu": "Peru", "Christ the Redeemer": "Brazil",
    "Sugarloaf Mountain": "Brazil", "Copacabana Beach": "Brazil", "Angel Falls": "Venezuela",
    "the Galápagos Islands": "Ecuador", "Easter Island": "Chile",
}

LANDMARK_CITY = {
    "the Eiffel Tower": "Paris", "the Louvre": "Paris", "the Arc de Triomphe": "Paris",
    "the Champs-Élysées": "Paris", "the Colosseum": "Rome", "the Trevi Fountain": "Rome",
    "the Spanish Steps": "Rome", "St. Mark's Basilica": "Venice", "the Rialto Bridge": "Venice",
    "the Uffizi Gallery": "Florence", "La Scala": "Milan", "the Sagrada Família": "Barcelona",
    "the Alhambra": "Granada", "the Prado Museum": "Madrid", "the Acropolis": "Athens", "the Parthenon": "Athens",
    "Big Ben": "London", "Buckingham Palace": "London", "Tower Bridge": "London", "Westminster Abbey": "London",
    "Trafalgar Square": "London", "the Brandenburg Gate": "Berlin", "Checkpoint Charlie": "Berlin",
    "Schönbrunn Palace": "Vienna", "the Atomium": "Brussels", "Manneken Pis": "Brussels",
    "Tivoli Gardens": "Copenhagen", "Wawel Castle": "Krakow", "Charles Bridge": "Prague",
    "the Kremlin": "Moscow", "Red Square": "Moscow", "St. Basil's Cathedral": "Moscow",
    "the Bolshoi Theatre": "Moscow", "the Hermitage Museum": "Saint Petersburg",
    "Hagia Sophia": "Istanbul", "the Blue Mosque": "Istanbul", "the Grand Bazaar": "Istanbul",
    "the Forbidden City": "Beijing", "Tiananmen Square": "Beijing",
    "Kinkaku-ji": "Kyoto", "Senso-ji": "Tokyo", "the Taj Mahal": "Agra", "the Golden Temple": "Amritsar",
    "the Petronas Towers": "Kuala Lumpur", "the Shwedagon Pagoda": "Yangon", "the Kaaba": "Mecca",
    "the Burj Khalifa": "Dubai", "Christ the Redeemer": "Rio de Janeiro", "Sugarloaf Mountain": "Rio de Janeiro",
    "Copacabana Beach": "Rio de Janeiro", "the CN Tower": "Toronto", "the Statue of Liberty": "New York",
    "the Empire State Building": "New York", "Times Square": "New York", "Central Park": "New York",
    "the Brooklyn Bridge": "New York", "the Golden Gate Bridge": "San Francisco", "Alcatraz": "San Francisco",
    "the Space Needle": "Seattle", "the White House": "Washington", "the Lincoln Memorial": "Washington",
    "the Gateway Arch": "St. Louis", "the Liberty Bell": "Philadelphia", "the Alamo": "San Antonio",
    "the Hollywood Sign": "Los Angeles", "Table Mountain": "Cape Town",
}

PAINTING_ARTIST = {
    "the Mona Lisa": "Leonardo da Vinci", "The Last Supper": "Leonardo da Vinci",
    "The Starry Night": "Vincent van Gogh", "Sunflowers": "Vincent van Gogh", "The Scream": "Edvard Munch",
    "Guernica": "Pablo Picasso", "The Persistence of Memory": "Salvador Dalí",
    "The Birth of Venus": "Sandro Botticelli", "The Night Watch": "Rembrandt",
    "Girl with a Pearl Earring": "Johannes Vermeer", "Water Lilies": "Claude Monet",
    "The Creation of Adam": "Michelangelo", "American Gothic": "Grant Wood", "The Great Wave off Kanagawa": "Hokusai",
    "Las Meninas": "Diego Velázquez", "The School of Athens": "Raphael", "Nighthawks": "Edward Hopper",
    "Campbell's Soup Cans": "Andy Warhol", "The Kiss": "Gustav Klimt",
    "A Sunday Afternoon on the Island of La Grande Jatte": "Georges Seurat",
}

NOVEL_AUTHOR = {
    "Pride and Prejudice": "Jane Austen", "Emma": "Jane Austen", "1984": "George Orwell",
    "Animal Farm": "George Orwell", "Don Quixote": "Miguel de Cervantes", "War and Peace": "Leo Tolstoy",
    "Anna Karenina": "Leo Tolstoy", "Crime and Punishment": "Fyodor Dostoevsky",
    "The Brothers Karamazov": "Fyodor Dostoevsky", "Moby-Dick": "Herman Melville",
    "The Great Gatsby": "F. Scott Fitzgerald", "To Kill a Mockingbird": "Harper Lee",
    "The Catcher in the Rye": "J.D. Salinger", "The Hobbit": "J.R.R. Tolkien",
    "The Lord of the Rings": "J.R.R. Tolkien", "Harry Potter and the Philosopher's Stone": "J.K. Rowling",
    "Oliver Twist": "Charles Dickens", "A Tale of Two Cities": "Charles Dickens",
    "Great Expectations": "Charles Dickens", "David Copperfield": "Charles Dickens", "Les Misérables": "Victor Hugo",
    "The Hunchback of Notre-Dame": "Victor Hugo", "Frankenstein": "Mary Shelley", "Dracula": "Bram Stoker",
    "Jane Eyre": "Charlotte Brontë", "Wuthering Heights": "Emily Brontë",
    "The Adventures of Tom Sawyer": "Mark Twain", "Adventures of Huckleberry Finn": "Mark Twain",
    "Ulysses": "James Joyce", "The Old Man and the Sea": "Ernest Hemingway", "A Farewell to Arms": "Ernest Hemingway",
    "The Grapes of Wrath": "John Steinbeck", "Of Mice and Men": "John Steinbeck", "Brave New World": "Aldous Huxley",
    "Fahrenheit 451": "Ray Bradbury", "One Hundred Years of Solitude": "Gabriel García Márquez",
    "Madame Bovary": "Gustave Flaubert", "The Count of Monte Cristo": "Alexandre Dumas",
    "The Three Musketeers": "Alexandre Dumas", "The Picture of Dorian Gray": "Oscar Wilde",
    "Treasure Island": "Robert Louis Stevenson", "Gulliver's Travels": "Jonathan Swift",
    "Robinson Crusoe": "Daniel Defoe", "Little Women": "Louisa May Alcott", "The Shining": "Stephen King",
    "The Da Vinci Code": "Dan Brown", "The Hunger Games": "Suzanne Collins",
    "A Game of Thrones": "George R.R. Martin", "Charlie and the Chocolate Factory": "Roald Dahl",
    "Matilda": "Roald Dahl", "Twenty Thousand Leagues Under the Seas": "Jules Verne",
    "Around the World in Eighty Days": "Jules Verne", "The War of the Worlds": "H.G. Wells",
    "The Time Machine": "H.G. Wells", "Murder on the Orient Express": "Agatha Christie",
    "The Alchemist": "Paulo Coelho", "The Handmaid's Tale": "Margaret Atwood", "Lord of the Flies": "William Golding",
    "Gone with the Wind": "Margaret Mitchell", "Dune": "Frank Herbert",
}

BIRTH_COUNTRY = {
    "Albert Einstein": "Germany", "Charles Darwin": "England", "Isaac Newton": "England",
    "William Shakespeare": "England", "Charles Dickens": "England", "Jane Austen": "England",
    "Winston Churchill": "England", "Queen Victoria": "England", "Wolfgang Amadeus Mozart": "Austria",
    "Ludwig van Beethoven": "Germany", "Johann Sebastian Bach": "Germany", "Richard Wagner": "Germany",
    "Karl Marx": "Germany", "Friedrich Nietzsche": "Germany", "Martin Luther": "Germany",
    "Johann Wolfgang von Goethe": "Germany", "Pablo Picasso": "Spain", "Salvador Dalí": "Spain",
    "Miguel de Cervantes": "Spain", "Rafael Nadal": "Spain", "Leonardo da Vinci": "Italy", "Michelangelo": "Italy",
    "Galileo Galilei": "Italy", "Dante Alighieri": "Italy", "Christopher Columbus": "Italy",
    "Giuseppe Verdi": "Italy", "Antonio Vivaldi": "Italy", "Marie Curie": "Poland", "Frédéric Chopin": "Poland",
    "Robert Lewandowski": "Poland", "Napoleon Bonaparte": "France", "Victor Hugo": "France",
    "Jules Verne": "France", "Claude Monet": "France", "Zinedine Zidane": "France", "Kylian Mbappé": "France",
    "Leo Tolstoy": "Russia", "Fyodor Dostoevsky": "Russia", "Pyotr Ilyich Tchaikovsky": "Russia",
    "Vladimir Lenin": "Russia", "Peter the Great": "Russia", "Yuri Gagarin": "Russia",
    "Maria Sharapova": "Russia", "Frida Kahlo": "Mexico", "Nelson Mandela": "South Africa",
    "Mahatma Gandhi": "India", "Rabindranath Tagore": "India", "Sachin Tendulkar": "India",
    "Confucius": "China", "Mao Zedong": "China", "Yao Ming": "China", "Genghis Khan": "Mongolia",
    "Gabriel García Márquez": "Colombia", "Shakira": "Colombia", "Pablo Neruda": "Chile",
    "Jorge Luis Borges": "Argentina", "Lionel Messi": "Argentina", "Diego Maradona": "Argentina",
    "Pelé": "Brazil", "Neymar": "Brazil", "Ayrton Senna": "Brazil", "Cristiano Ronaldo": "Portugal",
    "Bob Marley": "Jamaica", "Usain Bolt": "Jamaica", "Akira Kurosawa": "Japan", "Hayao Miyazaki": "Japan",
    "Haruki Murakami": "Japan", "Shohei Ohtani": "Japan", "Edvard Munch": "Norway", "Henrik Ibsen": "Norway",
    "Magnus Carlsen": "Norway", "Hans Christian Andersen": "Denmark", "Søren Kierkegaard": "Denmark",
    "Alfred Nobel": "Sweden", "Greta Thunberg": "Sweden", "Zlatan Ibrahimović": "Sweden", "Björn Borg": "Sweden",
    "Jean Sibelius": "Finland", "Plato": "Greece", "Aristotle": "Greece", "Socrates": "Greece",
    "Cleopatra": "Egypt", "Mohamed Salah": "Egypt", "Naguib Mahfouz": "Egypt",
    "Oscar Wilde": "Ireland", "James Joyce": "Ireland", "Celine Dion": "Canada", "Justin Bieber": "Canada",
    "Wayne Gretzky": "Canada", "Sidney Crosby": "Canada", "Steve Irwin": "Australia", "Don Bradman": "Australia",
    "Edmund Hillary": "New Zealand", "Ernest Rutherford": "New Zealand", "Kofi Annan": "Ghana",
    "Chinua Achebe": "Nigeria", "Orhan Pamuk": "Turkey", "Ho Chi Minh": "Vietnam", "Malala Yousafzai": "Pakistan",
    "Roger Federer": "Switzerland", "Novak Djokovic": "Serbia", "Luka Modrić": "Croatia",
    "Michael Schumacher": "Germany", "Steffi Graf": "Germany", "Franz Beckenbauer": "Germany",
    "Nadia Comăneci": "Romania", "Björk": "Iceland", "Albert Camus": "Algeria", "Niels Bohr": "Denmark",
    "Max Planck": "Germany", "Werner Heisenberg": "Germany", "Enrico Fermi": "Italy",
    "Dmitri Mendeleev": "Russia", "Louis Pasteur": "France", "Antoine Lavoisier": "France",
    "Alan Turing": "England", "Stephen Hawking": "England", "Adele": "England", "David Beckham": "England",
    "Lewis Hamilton": "England", "Andy Murray": "Scotland", "Manny Pacquiao": "the Philippines",
    "Giannis Antetokounmpo": "Greece", "Luka Dončić": "Slovenia", "Dirk Nowitzki": "Germany",
}

OCCUPATION = {
    # one clear profession per person; vowel-initial professions are avoided ("a" vs "an")
    "Albert Einstein": "physicist", "Niels Bohr": "physicist", "Max Planck": "physicist",
    "Werner Heisenberg": "physicist", "Enrico Fermi": "physicist", "Richard Feynman": "physicist",
    "Stephen Hawking": "physicist", "Erwin Schrödinger": "physicist",
    "Dmitri Mendeleev": "chemist", "Antoine Lavoisier": "chemist", "Louis Pasteur": "chemist",
    "Alan Turing": "mathematician", "Srinivasa Ramanujan": "mathematician", "Euclid": "mathematician",
    "Wolfgang Amadeus Mozart": "composer", "Ludwig van Beethoven": "composer",
    "Johann Sebastian Bach": "composer", "Frédéric Chopin": "composer", "Pyotr Ilyich Tchaikovsky": "composer",
    "Antonio Vivaldi": "composer", "Giuseppe Verdi": "composer", "Richard Wagner": "composer",
    "Johannes Brahms": "composer", "Franz Schubert": "composer", "Joseph Haydn": "composer",
    "Claude Debussy": "composer",
    "Pablo Picasso": "painter", "Vincent van Gogh": "painter", "Claude Monet": "painter", "Rembrandt": "painter",
    "Johannes Vermeer": "painter", "Frida Kahlo": "painter", "Salvador Dalí": "painter",
    "Pierre-Auguste Renoir": "painter", "Paul Cézanne": "painter", "Henri Matisse": "painter",
    "Edvard Munch": "painter", "Gustav Klimt": "painter",
    "Jane Austen": "novelist", "Charles Dickens": "novelist", "Leo Tolstoy": "novelist",
    "Fyodor Dostoevsky": "novelist", "Ernest Hemingway": "novelist", "Agatha Christie": "novelist",
    "Stephen King": "novelist", "Jules Verne": "novelist", "J.K. Rowling": "novelist",
    "Gabriel García Márquez": "novelist", "Haruki Murakami": "novelist",
    "Plato": "philosopher", "Aristotle": "philosopher", "Socrates": "philosopher", "Confucius": "philosopher",
    "Immanuel Kant": "philosopher", "Friedrich Nietzsche": "philosopher", "Søren Kierkegaard": "philosopher",
    "John Locke": "philosopher", "David Hume": "philosopher", "Baruch Spinoza": "philosopher",
    "Homer": "poet", "Dante Alighieri": "poet", "Walt Whitman": "poet", "Emily Dickinson": "poet",
    "Robert Frost": "poet", "Pablo Neruda": "poet", "John Keats": "poet", "Lord Byron": "poet",
    "Elvis Presley": "singer", "Michael Jackson": "singer", "Madonna": "singer", "Whitney Houston": "singer",
    "Beyoncé": "singer", "Freddie Mercury": "singer", "Adele": "singer", "Shakira": "singer",
    "Celine Dion": "singer", "Bob Marley": "singer", "Frank Sinatra": "singer", "Justin Bieber": "singer",
}

ATHLETE_SPORT = {
    "Lionel Messi": "football", "Cristiano Ronaldo": "football", "Pelé": "football", "Diego Maradona": "football",
    "Zinedine Zidane": "football", "Kylian Mbappé": "football", "Mohamed Salah": "football", "Neymar": "football",
    "David Beckham": "football", "Robert Lewandowski": "football", "Luka Modrić": "football",
    "Zlatan Ibrahimović": "football", "Franz Beckenbauer": "football",
    "Roger Federer": "tennis", "Rafael Nadal": "tennis", "Novak Djokovic": "tennis", "Serena Williams": "tennis",
    "Venus Williams": "tennis", "Andy Murray": "tennis", "Maria Sharapova": "tennis", "Steffi Graf": "tennis",
    "Björn Borg": "tennis",
    "Michael Jordan": "basketball", "LeBron James": "basketball", "Kobe Bryant": "basketball",
    "Shaquille O'Neal": "basketball", "Stephen Curry": "basketball", "Magic Johnson": "basketball",
    "Dirk Nowitzki": "basketball", "Yao Ming": "basketball", "Giannis Antetokounmpo": "basketball",
    "Luka Dončić": "basketball",
    "Tiger Woods": "golf", "Jack Nicklaus": "golf", "Arnold Palmer": "golf", "Rory McIlroy": "golf",
    "Michael Phelps": "swimming", "Mark Spitz": "swimming", "Ian Thorpe": "swimming",
    "Wayne Gretzky": "hockey", "Sidney Crosby": "hockey", "Mario Lemieux": "hockey",
    "Babe Ruth": "baseball", "Derek Jeter": "baseball", "Shohei Ohtani": "baseball", "Jackie Robinson": "baseball",
    "Muhammad Ali": "boxing", "Mike Tyson": "boxing", "Floyd Mayweather": "boxing", "Manny Pacquiao": "boxing",
    "Sachin Tendulkar": "cricket", "Virat Kohli": "cricket", "Don Bradman": "cricket", "Shane Warne": "cricket",
    "Simone Biles": "gymnastics", "Nadia Comăneci": "gymnastics",
    "Magnus Carlsen": "chess", "Garry Kasparov": "chess", "Bobby Fischer": "chess",
    "Eddy Merckx": "cycling", "Lindsey Vonn": "skiing", "Mikaela Shiffrin": "skiing",
}

ELEMENT_SYMBOL = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "beryllium": "Be", "boron": "B", "carbon": "C",
    "nitrogen": "N", "oxygen": "O", "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg",
    "aluminium": "Al", "silicon": "Si", "phosphorus": "P", "sulfur": "S", "chlorine": "Cl", "argon": "Ar",
    "potassium": "K", "calcium": "Ca", "titanium": "Ti", "chromium": "Cr", "manganese": "Mn", "iron": "Fe",
    "cobalt": "Co", "nickel": "Ni", "copper": "Cu", "zinc": "Zn", "arsenic": "As", "bromine": "Br",
    "krypton": "Kr", "strontium": "Sr", "silver": "Ag", "tin": "Sn", "iodine": "I", "xenon": "Xe",
    "barium": "Ba", "tungsten": "W", "platinum": "Pt", "gold": "Au", "mercury": "Hg", "lead": "Pb",
    "radon": "Rn", "radium": "Ra", "uranium": "U", "plutonium": "Pu",
}

COMPANY_COUNTRY = {
    "Toyota": "Japan", "Sony": "Japan", "Honda": "Japan", "Nintendo": "Japan", "Panasonic": "Japan",
    "Nissan": "Japan", "Canon": "Japan", "Mitsubishi": "Japan", "Toshiba": "Japan", "Yamaha": "Japan",
    "Samsung": "South Korea", "Hyundai": "South Korea", "LG": "South Korea", "Kia": "South Korea",
    "Volkswagen": "Germany", "BMW": "Germany", "Mercedes-Benz": "Germany", "Audi": "Germany",
    "Porsche": "Germany", "Siemens": "Germany", "Adidas": "Germany", "Puma": "Germany", "Bosch": "Germany",
    "SAP": "Germany", "Lufthansa": "Germany",
    "Ferrari": "Italy", "Fiat": "Italy", "Lamborghini": "Italy", "Gucci": "Italy", "Prada": "Italy",
    "Pirelli": "Italy", "Renault": "France", "Peugeot": "France", "Michelin": "France", "Chanel": "France",
    "L'Oréal": "France", "Louis Vuitton": "France", "Nestlé": "Switzerland", "Novartis": "Switzerland",
    "IKEA": "Sweden", "Volvo": "Sweden", "Ericsson": "Sweden", "H&M": "Sweden", "Spotify": "Sweden",
    "Nokia": "Finland", "Lego": "Denmark", "Huawei": "China", "Alibaba": "China", "Tencent": "China",
    "Lenovo": "China", "Xiaomi": "China", "Infosys": "India", "Tata Motors": "India", "Gazprom": "Russia",
    "Aeroflot": "Russia", "Petrobras": "Brazil", "Embraer": "Brazil", "BlackBerry": "Canada",
    "Bombardier": "Canada", "Shopify": "Canada", "Qantas": "Australia", "Zara": "Spain", "Seat": "Spain",
}

PRODUCT_MAKER = {
    "the iPhone": "Apple", "the iPad": "Apple", "the MacBook": "Apple", "the iPod": "Apple", "Safari": "Apple",
    "Windows": "Microsoft", "the Xbox": "Microsoft", "Excel": "Microsoft", "PowerPoint": "Microsoft",
    "Internet Explorer": "Microsoft", "Bing": "Microsoft", "the PlayStation": "Sony", "the Walkman": "Sony",
    "the Game Boy": "Nintendo", "the Wii": "Nintendo", "Android": "Google", "Gmail": "Google",
    "the Pixel phone": "Google", "the Kindle": "Amazon", "Alexa": "Amazon", "the Model S": "Tesla",
    "the Mustang": "Ford", "the Model T": "Ford", "the Corolla": "Toyota", "the Prius": "Toyota",
    "the Camry": "Toyota", "the Civic": "Honda", "the Accord": "Honda", "the Beetle": "Volkswagen",
    "the Golf GTI": "Volkswagen", "the 911": "Porsche", "the Corvette": "Chevrolet", "the Camaro": "Chevrolet",
    "the Galaxy phone": "Samsung", "the ThinkPad": "Lenovo", "Photoshop": "Adobe", "Firefox": "Mozilla",
    "the Big Mac": "McDonald's", "the Whopper": "Burger King", "Sprite": "Coca-Cola", "Fanta": "Coca-Cola",
    "Barbie": "Mattel", "the Pentium": "Intel", "GeForce": "Nvidia",
    "Snapdragon": "Qualcomm", "the 747": "Boeing", "the A380": "Airbus",
}

COMPANY_FOUNDER = {
    "Microsoft": "Bill Gates", "Apple": "Steve Jobs", "Amazon": "Jeff Bezos", "Facebook": "Mark Zuckerberg",
    "SpaceX": "Elon Musk", "Oracle": "Larry Ellison", "Alibaba": "Jack Ma", "Walmart": "Sam Walton",
    "Netflix": "Reed Hastings", "Wikipedia": "Jimmy Wales", "IKEA": "Ingvar Kamprad", "Twitter": "Jack Dorsey",
    "Linux": "Linus Torvalds", "Intel": "Gordon Moore", "Nvidia": "Jensen Huang",
}

ANIMAL_CLASS = {
    "dolphin": "mammals", "whale": "mammals", "bat": "mammals", "elephant": "mammals", "kangaroo": "mammals",
    "platypus": "mammals", "lion": "mammals", "horse": "mammals", "seal": "mammals", "giraffe": "mammals",
    "eagle": "birds", "penguin": "birds", "ostrich": "birds", "owl": "birds", "parrot": "birds",
    "sparrow": "birds", "flamingo": "birds", "swan": "birds",
    "crocodile": "reptiles", "snake": "reptiles", "turtle": "reptiles", "lizard": "reptiles",
    "iguana": "reptiles", "alligator": "reptiles", "chameleon": "reptiles",
    "frog": "amphibians", "toad": "amphibians", "salamander": "amphibians", "newt": "amphibians",
    "shark": "fish", "salmon": "fish", "tuna": "fish", "trout": "fish", "goldfish": "fish", "cod": "fish",
    "ant": "insects", "bee": "insects", "butterfly": "insects", "beetle": "insects", "mosquito": "insects",
    "grasshopper": "insects", "spider": "arachnids", "scorpion": "arachnids", "tick": "arachnids",
}

HOLIDAY_MONTH = {
    "Christmas": "December", "Halloween": "October", "Valentine's Day": "February",
    "New Year's Day": "January", "Bastille Day": "July", "Saint Patrick's Day": "March",
    "American Independence Day": "July", "Thanksgiving in the United States": "November",
    "Guy Fawkes Night": "November", "Boxing Day": "December", "Canada Day": "July",
    "Australia Day": "January", "All Saints' Day": "November", "Epiphany": "January",
    "Labor Day in the United States": "September", "Memorial Day in the United States": "May",
    "Groundhog Day": "February", "Earth Day": "April", "Remembrance Day": "November",
    "Columbus Day": "October", "Martin Luther King Jr. Day": "January", "Presidents' Day": "February",
    "Mother's Day in the United States": "May", "Father's Day in the United States": "June",
}

MOON_PLANET = {
    "Titan": "Saturn", "Enceladus": "Saturn", "Rhea": "Saturn", "Mimas": "Saturn", "Europa": "Jupiter",
    "Ganymede": "Jupiter", "Io": "Jupiter", "Callisto": "Jupiter", "Phobos": "Mars", "Deimos": "Mars",
    "Triton": "Neptune", "Titania": "Uranus", "Oberon": "Uranus", "Miranda": "Uranus",
}


def _relation(name: str, description: str, templates: tuple[str, ...], facts: dict[str, str]) -> Relation:
    return Relation(name, description, templates, dict(facts))


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        _relation("capital", "country -> capital city", (
            "The capital city of {} is", "The capital of {} is", "The city that serves as the capital of {} is",
        ), _column(1)),
        _relation("continent", "country -> continent", (
            "{} is located in the continent of", "{} is a country in the continent of",
            "{} is part of the continent of",
        ), _column(2)),
        _relation("language", "country -> main language", (
            "The main language spoken in {} is", "The people of {} speak", "Most people in {} speak",
            "The language most widely spoken in {} is",
        ), _column(3)),
        _relation("currency", "country -> currency", (
            "The official currency of {} is the", "The currency of {} is the", "The money used in {} is the",
            "In {}, people pay with the",
        ), _column(4)),
        _relation("city_country", "city -> country", (
            "The city of {} is in the country of", "{} is a city in the country of",
            "{} is located in the country of",
        ), CITY_COUNTRY),
        _relation("us_city_state", "US city -> US state", (
            "The city of {} is in the state of", "{} is a city in the state of", "{} is located in the US state of",
        ), US_CITY_STATE),
        _relation("state_capital", "US state -> state capital", (
            "The capital city of the state of {} is", "The capital of the state of {} is", "The state capital of {} is",
        ), STATE_CAPITAL),
        _relation("landmark_country", "landmark -> country", (
            "{} is located in the country of", "{} can be found in the country of",
            "To see {}, you have to travel to the country of",
        ), LANDMARK_COUNTRY),
        _relation("landmark_city", "landmark -> city", (
            "To see {}, you have to travel to the city of", "{} is located in the city of",
            "{} can be found in the city of",
        ), LANDMARK_CITY),
        _relation("painting_artist", "painting -> painter", (
            "{} is a famous painting by", "{} was painted by", "The artist who painted {} was",
        ), PAINTING_ARTIST),
        _relation("novel_author", "novel -> author", (
            "The novel {} was written by", "{} is a novel by", "The author of the novel {} is",
        ), NOVEL_AUTHOR),
        _relation("birth_country", "person -> country of birth", (
            "The country where {} was born is", "{} was born in the country of", "{}'s country of birth is",
        ), BIRTH_COUNTRY),
        _relation("occupation", "person -> profession", (
            "{}'s profession was that of a", "{} worked as a", "By profession, {} was a",
        ), OCCUPATION),
        _relation("athlete_sport", "athlete -> sport", (
            "{} became famous in the sport of", "{} is a legend of the sport of",
            "{} is best known for the sport of", "The sport in which {} became famous is",
        ), ATHLETE_SPORT),
        _relation("element_symbol", "chemical element -> symbol", (
            "The chemical symbol for {} is", "The symbol of the chemical element {} is",
            "In chemistry, {} is written with the symbol",
        ), ELEMENT_SYMBOL),
        _relation("company_country", "company -> home country", (
            "The company {} comes from the country of", "{} is a company from the country of",
            "{} is a brand from the country of",
        ), COMPANY_COUNTRY),
        _relation("product_maker", "product -> company that makes it", (
            "{} is manufactured by", "{} is made by", "The company that makes {} is",
        ), PRODUCT_MAKER),
        _relation("company_founder", "company or project -> founder", (
            "The founder of {} is", "{} was founded by", "The person who founded {} is",
        ), COMPANY_FOUNDER),
        _relation("animal_class", "animal -> zoological class", (
            "The {} belongs to the class of", "Biologists classify the {} among the",
            "In the animal kingdom, the {} is one of the",
        ), ANIMAL_CLASS),
        _relation("holiday_month", "holiday -> month", (
            "{} takes place every year in the month of", "{} is celebrated in the month of",
            "The month in which {} is celebrated is",
        ), HOLIDAY_MONTH),
        _relation("moon_planet", "moon -> planet it orbits", (
            "{} orbits the planet", "{} is a moon of the planet", "{} is one of the moons of the planet",
        ), MOON_PLANET),
    )
}


def all_facts() -> list[Fact]:
    """Every candidate fact, in a fixed order (relations as listed, subjects as written)."""
    return [Fact(subject, relation.name, target) for relation in RELATIONS.values() for subject, target in relation.facts.items()]
