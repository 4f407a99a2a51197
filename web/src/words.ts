/** The words of generated passwords: crates/yakk/src/words.txt (checked equal by test/browser). */
export const WORDS: string[] = (
  "acorn actor adapt admiral adobe afloat agent album alert alias alpine amber ample anchor angle " +
  "ankle antler anvil apple apricot april arcade arch arctic arena argue armor arrow artist aspen " +
  "atlas atom attic audio august autumn avocado awake axis badge bagel baker bamboo banana banjo " +
  "banner barley barn basket basil beacon beagle beam bean beaver bedrock beetle bench berry " +
  "bicycle bingo birch biscuit bison blanket blaze blender blossom blue bonfire bonus border bottle " +
  "boulder bounce bracket branch brave bread breeze brick bridge brisk broccoli bronze brook broom " +
  "bubble bucket buffalo bugle bundle burrow butter button buzzard cabin cable cactus camel camera " +
  "canal candle canoe canvas canyon captain caramel carbon cargo carpet carrot cartoon castle " +
  "cattle cedar celery cello cement cereal chalk champion channel chapel charcoal cheddar cherry " +
  "chess chestnut chimney chisel chorus cider cinnamon circle citrus clarinet clay clever cliff " +
  "climb clock cloud clover coast cobalt cobra coconut comet compass copper coral cosmic cotton " +
  "cougar cousin coyote crab cradle crane crater crayon creek cricket crimson crocus crossbow " +
  "crystal cube cucumber cupboard curtain cushion cycle cypress daisy dancer dawn decade deer delta " +
  "denim desert diamond diesel dinner dipper divan dock dolphin domino donkey doorway dragon drawer " +
  "dream drift drum duckling dune dusk dynamo eagle easel echo eclipse eden elbow elder elephant " +
  "elm ember emerald empire engine envoy epic equator ermine errand escape estate evening exhibit " +
  "fabric falcon fable famous fancy farmer feather fennel ferry festival fiddle fig filter finch " +
  "fjord flag flannel flint flora flute foam forest fossil fountain fox frame freckle fresco frog " +
  "frost fruit fudge funnel gadget galaxy gallon garden garlic garnet gazelle gecko gentle geyser " +
  "giant ginger giraffe glacier glade glider globe glove goblet golden gondola gopher gourd granite " +
  "grape gravel green griffin grove guitar gumbo gust habit hammer hamster harbor harvest hatch " +
  "hawk hazel heather hedge helium helmet hermit heron hickory hiking hippo hollow honey hopper " +
  "horizon hornet hotel humble hummus husky hyacinth iceberg icicle igloo iguana image impala index " +
  "indigo inkwell insect island ivory ivy jackal jacket jaguar jasmine jelly jersey jester jetty " +
  "jewel jigsaw jockey jolly journal jovial jubilee juggler juice jumbo jungle juniper jupiter " +
  "kayak kelp kernel kettle keyboard kidney kingdom kiosk kitten kiwi knapsack knight koala label " +
  "ladder lagoon lantern laptop larch lasso lattice laurel lava lemon lentil leopard lettuce lilac " +
  "lily limber linen lion lizard llama lobster locket locust lotus lumber lunar lynx lyric magnet " +
  "magpie mango manor maple marble marigold marina marlin marsh mascot meadow melody melon mentor " +
  "meteor milk mimosa mint mirror mitten mocha modem molten monarch monsoon moose morning mosaic " +
  "moss motor mountain muffin mural museum mustard myrtle napkin narwhal nature nectar needle nest " +
  "nickel nimble noble noodle north nova nugget nutmeg oak oasis oatmeal ocean octave olive omega " +
  "onion opal opera orange orbit orchard orchid osprey otter outpost oven owl oxygen oyster paddle " +
  "pagoda palace panda panther papaya parade parcel parrot pasta pastel peach peanut pebble pelican " +
  "pencil penguin pepper perch piano pickle pigeon pillow pine pirate pistachio planet plaza plum " +
  "pocket polar pony poplar poppy potato prairie prism puffin pumpkin puzzle pyramid quail quarry " +
  "quartz quest quill quilt quiver rabbit raccoon radar radish raft rainbow raisin ranch raven reef " +
  "relay ribbon ridge rocket rodeo rooster rose ruby rudder rustic saddle saffron salmon sandal " +
  "sapphire satin saturn savanna scarlet scooter sculptor seagull sequoia shadow shamrock shell " +
  "sherbet shore silver sketch sled slipper snail snowy socket sonnet sparrow spider spinach sponge " +
  "spruce squash squid stable starling statue stone stork summit sunny swan sycamore table taco " +
  "tadpole tango tapestry teapot temple thistle thunder tiger timber toast tomato topaz torch " +
  "toucan tractor trail tulip tundra turnip turtle tuxedo twilight umber umbrella unicorn union " +
  "upland urchin utopia valley vanilla velvet venus verdant vessel violet violin viper vista " +
  "volcano voyage waffle wagon walnut walrus wander warbler wasabi water weasel wheat whisker " +
  "willow window winter wizard wombat woodland yacht yak yarrow yellow yodel yogurt zebra zenith " +
  "zephyr zigzag zinc zinnia zodiac zucchini"
).split(" ");
